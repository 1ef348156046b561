"""A plant on this machine: a staged rollout across real and simulated stations, the central broker under the events
of many stations across an uplink cut, and the broker at 1,000 stations.

Rows:
- rollout: 3 real `edge_ad run` stations (the canary group) and 100 simulated ones (benchmarks/fleet_sim.py: the
  real fleet agent, TUF client and S3 fetch, a stand-in loop that scores recorded scores against the bundle's
  threshold) in 4 more groups; `rclone serve s3` as the store; time to install the first version, to roll out a
  second one group by group, bytes fetched; then a version whose threshold flags every frame: where the rollout
  stops, how long until the canaries run the old version again.
- events: 100 station brokers (plant/mosquitto/station-bridge.conf as shipped) bridged through a TCP relay to the
  central broker (plant/mosquitto/central.conf: TLS, a user per station, the ACL); each station publishes events at
  a stated rate; the relay cuts the uplink for 60 s; events lost, duplicated, out of order per station, time to
  drain, the brokers' CPU and memory.
- load: 1,000 MQTT clients each publishing its retained fleet status and events at a stated rate to one broker:
  its CPU and memory, measured; the rest of what 1,000 stations take is estimated in the notes from these rows.
Usage: flock /tmp/edge_ad_cpu.lock python benchmarks/fleet.py [--parts rollout,events,load]
Smoke run (1 real + 4 simulated stations, 3 bridged brokers, a 2 s cut, 20 load clients; results in a temp folder):
python benchmarks/fleet.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import common  # noqa: E402
from common import write_results  # noqa: E402
from mosquitto_fixture import Broker  # noqa: E402
from plant_kit import (CONTROLLER, PUBLISHER, STATION, S3Server, TcpProxy, central_broker,  # noqa: E402
                       line_video, make_certs, spawn, station_broker, stop_process)

from edge_ad import bundle as B  # noqa: E402
from edge_ad.fleet import desired as DS  # noqa: E402
from edge_ad.fleet import repo as R  # noqa: E402
from edge_ad.fleet.config import load_plant_config  # noqa: E402
from edge_ad.fleet.publish import publish_bundle, publish_desired  # noqa: E402
from edge_ad.fleet.rollout import Rollout  # noqa: E402
from edge_ad.fleet.status import FleetView  # noqa: E402
from edge_ad.fleet.store import open_store  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402

SIZES = {  # what each run starts: the full run is what the results say; smoke only checks the code path
    "full": {"real": 3, "sims": 100, "sim_procs": 10, "sim_fps": 5.0, "sim_groups": 4, "soak_s": 10.0,
             "min_frames": 100, "event_stations": 100, "event_rate": 1.0, "warm_s": 10.0, "cut_s": 60.0,
             "load_stations": 1000, "load_procs": 10, "load_rate": 0.1, "load_report_s": 10.0, "load_s": 30.0},
    "smoke": {"real": 1, "sims": 4, "sim_procs": 2, "sim_fps": 5.0, "sim_groups": 2, "soak_s": 0.5,
              "min_frames": 10, "event_stations": 3, "event_rate": 5.0, "warm_s": 1.0, "cut_s": 2.0,
              "load_stations": 20, "load_procs": 2, "load_rate": 1.0, "load_report_s": 1.0, "load_s": 3.0},
}
FPS = 25  # the real stations' line video
TIMEOUT_S = float(os.environ.get("EDGE_AD_FLEET_TIMEOUT_S", 300))  # any wait in the benchmark: a hang fails instead of stalling
COLUMNS = [("part", "part"), ("variant", "variant"), ("stations", "stations"), ("result", "result"),
           ("seconds", "seconds"), ("bytes_fetched", "bytes fetched"), ("bytes_per_station", "bytes / station"),
           ("sent", "events sent"), ("lost", "lost"), ("duplicates", "duplicates"), ("out_of_order", "out of order"),
           ("drain_s", "drain after cut s"), ("msgs_per_s", "msgs/s"), ("broker_cpu_pct", "central CPU %"),
           ("broker_rss_mb", "central RSS MB"), ("note", "note")]


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def wait(cond, what: str, timeout: float = TIMEOUT_S, every: float = 0.2) -> float:
    say(f"waiting for {what}")
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - t0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------------------------------------- rollout


def make_line(work: Path, onnx: Path, good_dir: Path) -> tuple[Path, list[float], Path]:
    """The line video, the model's scores on its frames, and bundles v1 (fine), v2 (a recalibration), v3 (a
    threshold at a fifth of the good frames' scores: every frame flagged, as a bad calibration would)."""
    video = work / "line.avi"
    goods = line_video(good_dir, video, FPS)
    det = open_detector(onnx)
    scores = [det.detect(g).score for g in goods]
    parts = work / "parts"
    info = json.loads(onnx.with_suffix(".json").read_text())
    for threshold, note in ((max(scores) * 1.2, "v1"), (max(scores) * 1.2, "v2 recalibrated"),
                            (min(scores) * 0.2, "v3 threshold too low")):
        (work / "model.json").write_text(json.dumps({**info, "threshold": threshold}))
        B.write_bundle(parts, "demo", {"model.onnx": onnx, "model.json": work / "model.json"},
                       {"method": "rd", "threshold": threshold, "note": note,
                        "readiness": {"ready": True, "reason": "benchmark bundle"}})
    return video, scores, parts


def station_raw(name: str, group: str, work: Path, broker: Broker, s3: S3Server, trusted: Path, video: Path | None,
                report_s: float) -> dict:
    d = work / "stations" / name
    raw = {"station": name, "part": "demo", "parts_dir": str(d / "parts"), "frame_log": "",
           "evidence": {"enabled": False}, "fault": {"retry_s": 0.5},
           "mqtt": {"enabled": True, "host": broker.host, "port": broker.port, "queue_dir": str(d / "queue"),
                    "queue_fsync": False, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
           "fleet": {"enabled": True, "repository": "s3://bundles/plant", "s3_endpoint": s3.ro_url,
                     "trusted_root": str(trusted), "cache_dir": str(d / "fleet"), "group": group,
                     "poll_s": 600.0, "retry_s": 2.0, "report_s": report_s, "switch_timeout_s": 60.0}}
    if video is not None:
        raw["camera"] = {"source": str(video), "live": True}
    return raw


def fetched(view: FleetView) -> int:
    return sum(int(d.get("bytes_fetched") or 0) for d in view.stations().values())


def all_on(view: FleetView, version: str, n: int) -> bool:
    st = [d for d in view.stations().values() if d.get("part") == "demo"]
    return len(st) >= n and all(d.get("version") == version and d.get("state") == "running" for d in st)


def rollout_rows(work: Path, onnx: Path, good_dir: Path, size: dict) -> tuple[list[dict], dict]:
    env_pub = {"AWS_ACCESS_KEY_ID": PUBLISHER[0], "AWS_SECRET_ACCESS_KEY": PUBLISHER[1]}
    os.environ.update(env_pub)
    station_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    station_env.update(AWS_ACCESS_KEY_ID=STATION[0], AWS_SECRET_ACCESS_KEY=STATION[1], PYTHONUNBUFFERED="1")
    broker = Broker(work / "central").start()
    s3 = S3Server(work / "store")
    (s3.root / "bundles").mkdir()
    procs: list[subprocess.Popen] = []
    view = None
    try:
        store = open_store("s3://bundles/plant", s3.rw_url)
        keys = work / "keys"
        video, scores, parts = make_line(work, onnx, good_dir)
        groups = [f"line{i + 1}" for i in range(size["sim_groups"])]
        plant_yaml = work / "plant.yaml"
        plant_yaml.write_text(yaml.safe_dump({
            "repository": "s3://bundles/plant", "s3_endpoint": s3.rw_url, "keys_dir": str(keys),
            "root_key": str(work / "offline" / "root.pem"), "parts_dir": str(parts),
            "broker": {"host": broker.host, "port": broker.port},
            "rollout": {"groups": ["canary", *groups], "soak_s": size["soak_s"], "min_frames": size["min_frames"],
                        "station_timeout_s": 120.0, "poll_s": 0.2}}))
        plant = load_plant_config(plant_yaml)
        R.init_repo(store, keys, plant.root_key, plant.expiry)
        trusted = work / "trusted_root.json"
        trusted.write_bytes(R.public_root(store))
        for v in (1, 2, 3):
            publish_bundle(store, keys, parts, "demo", plant.expiry, v)
        publish_desired(store, keys, DS.set_version(DS.empty(), "demo", 1), plant.expiry)
        bundle_bytes = sum(p.stat().st_size for p in (parts / "demo" / "v2").iterdir())
        t0 = time.monotonic()
        for i in range(size["real"]):
            raw = station_raw(f"real{i + 1}", "canary", work, broker, s3, trusted, video, 1.0)
            d = Path(raw["parts_dir"]).parent
            d.mkdir(parents=True)
            (d / "station.yaml").write_text(yaml.safe_dump(raw))
            procs.append(spawn([sys.executable, "-m", "edge_ad", "run", "--config", str(d / "station.yaml")],
                               stdout=open(d / "log.txt", "w"), stderr=subprocess.STDOUT, env=station_env))
        per = -(-size["sims"] // size["sim_procs"])
        for k in range(size["sim_procs"]):
            names = [f"sim{i:03d}" for i in range(k * per, min(size["sims"], (k + 1) * per))]
            spec = {"scores": scores, "fps": size["sim_fps"], "stations": [
                station_raw(n, groups[int(n[3:]) % len(groups)], work, broker, s3, trusted, None, 2.0) for n in names]}
            (work / f"sim{k}.json").write_text(json.dumps(spec))
            procs.append(spawn([sys.executable, str(Path(__file__).parent / "fleet_sim.py"), "stations",
                                "--spec", str(work / f"sim{k}.json")], stdout=open(work / f"sim{k}.log", "w"),
                               stderr=subprocess.STDOUT, env=station_env))
        n = size["real"] + size["sims"]
        view = FleetView(plant.broker)
        wait(lambda: all_on(view, "v1", n), f"{n} stations running v1")
        t_install = time.monotonic() - t0
        b1 = fetched(view)
        rows = [{"part": "rollout", "variant": "first install v1 (empty stations)", "stations": n, "result": "done",
                 "seconds": round(t_install, 1), "bytes_fetched": b1, "bytes_per_station": round(b1 / n),
                 "note": f"bundle {bundle_bytes} bytes; {size['real']} real + {size['sims']} simulated, includes "
                         "process start"}]
        t0 = time.monotonic()
        good = Rollout(plant, store, view, "demo", 2, say=say).run()
        took = time.monotonic() - t0
        b2 = fetched(view)
        per_group = "; ".join(f"{g['name']} {len(g['stations'])} st. {g.get('finished', 0) - g.get('started', 0):.1f} s"
                              for g in good["groups"] if g.get("started"))
        rows.append({"part": "rollout", "variant": f"v1 -> v2 in {len(good['groups'])} groups, soak {size['soak_s']:g} s",
                     "stations": n, "result": good["state"], "seconds": round(took, 1), "bytes_fetched": b2 - b1,
                     "bytes_per_station": round((b2 - b1) / n), "note": per_group})
        t0 = time.monotonic()
        stops = {}
        bad = Rollout(plant, store, view, "demo", 3, say=lambda m: (say(m), stops.setdefault(m.split(":")[0],
                                                                                           time.monotonic())))
        res = bad.run()
        took = time.monotonic() - t0
        stopped_s = stops.get("rollout stopped", time.monotonic()) - t0
        canary = next(g for g in res["groups"] if g["name"] == "canary")
        wait(lambda: all_on(view, f"v{res['from']}", n), f"every station back on v{res['from']}")
        b3 = fetched(view)
        rows.append({"part": "rollout", "variant": "v2 -> v3 (flags every frame)", "stations": n,
                     "result": f"{res['state']} at {canary['name']} ({canary['state']})", "seconds": round(took, 1),
                     "bytes_fetched": b3 - b2, "bytes_per_station": round((b3 - b2) / max(1, size["real"])),
                     "note": f"stopped after {stopped_s:.1f} s: {res['reason'][:120]}; canaries on v2 again "
                             f"{took - stopped_s:.1f} s later; other groups never got v3"})
        facts = {"bundle_bytes": bundle_bytes, "install_s": t_install, "stations": n,
                 "rollout_s": rows[1]["seconds"]}
        return rows, facts
    finally:
        if view is not None:
            view.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            stop_process(p, 30)
        s3.stop()
        broker.stop()


# -------------------------------------------------------------------------------------------------------- events


class Collector:
    """The central broker's view: every event's (station, seq) in arrival order, on a persistent session."""

    def __init__(self, broker, certs: Path, password: str) -> None:
        import paho.mqtt.client as mqtt

        self.seen: dict[str, list[int]] = {}
        self.last_arrival = 0.0
        self.count = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-collector", clean_session=False)
        self.c.tls_set(ca_certs=str(certs / "ca.crt"))
        self.c.username_pw_set(CONTROLLER, password)
        self.subscribed = threading.Event()  # events published before the SUBACK would never reach it
        self.c.on_connect = lambda c, *_: c.subscribe("edge_ad/+/demo/event", qos=1)
        self.c.on_subscribe = lambda *_: self.subscribed.set()
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()

    def _on(self, _c, _u, msg) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.seen.setdefault(doc["station"], []).append(doc["seq"])
            self.last_arrival = time.monotonic()
            self.count += 1

    def unique(self) -> int:
        with self.lock:
            return sum(len(set(v)) for v in self.seen.values())

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def event_rows(work: Path, size: dict) -> list[dict]:
    import paho.mqtt.client as mqtt

    n, rate = size["event_stations"], size["event_rate"]
    names = [f"st{i:03d}" for i in range(n)]
    passwords = {name: f"pw-{name}-0123" for name in names} | {CONTROLLER: "pw-controller-4567"}
    certs = make_certs(work / "certs")
    add_users_bulk(work / "passwd", passwords)
    central = central_broker(work / "central_tls", certs, work / "passwd").start()
    proxy = TcpProxy(central.port)
    brokers, pubs = [], []
    collector = None
    stop = threading.Event()
    sent = {name: 0 for name in names}
    try:
        for name in names:
            brokers.append(station_broker(work / "brokers" / name, name, passwords[name], proxy.port, certs).start())
        collector = Collector(central, certs, passwords[CONTROLLER])
        for name, b in zip(names, brokers):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-edge_ad")
            c.connect(b.host, b.port, keepalive=30)
            c.loop_start()
            pubs.append((name, c))
        wait(lambda: proxy.connections >= n and all(c.is_connected() for _, c in pubs) and collector.subscribed.is_set(),
             f"{n} bridges and publishers connected, the collector subscribed")

        def publish() -> None:
            period = 1.0 / rate
            nxt = time.monotonic()
            while not stop.is_set():
                for name, c in pubs:
                    c.publish(f"edge_ad/{name}/demo/event", json.dumps({"station": name, "seq": sent[name],
                                                                        "time": time.time(), "pad": "x" * 300}), qos=1)
                    sent[name] += 1
                nxt += period
                stop.wait(max(0.0, nxt - time.monotonic()))

        cpu0, t_start = proc_cpu_s(central.proc.pid), time.monotonic()
        th = threading.Thread(target=publish, daemon=True)
        th.start()
        time.sleep(size["warm_s"])
        proxy.cut()
        t_cut = time.monotonic()
        time.sleep(size["cut_s"])
        proxy.restore()
        t_restore = time.monotonic()
        time.sleep(size["warm_s"])
        stop.set()
        th.join(10)
        total = sum(sent.values())
        try:
            wait(lambda: collector.unique() >= total, f"all {total} events at the central broker", every=0.5)
            gave_up = ""
        except RuntimeError as e:  # reported as lost, not a crash: the row says what arrived
            gave_up = f"; gave up after {TIMEOUT_S:g} s ({e})"
        drain = collector.last_arrival - t_restore
        elapsed = time.monotonic() - t_start
        cpu = proc_cpu_s(central.proc.pid) - cpu0
        with collector.lock:
            seen = {k: list(v) for k, v in collector.seen.items()}
        lost = sum(sent[k] - len(set(seen.get(k, []))) for k in names)
        dups = sum(len(v) - len(set(v)) for v in seen.values())
        disorder = 0
        for v in seen.values():
            firsts, got = [], set()
            for s in v:
                if s not in got:
                    got.add(s)
                    firsts.append(s)
            disorder += sum(1 for a, b in zip(firsts, firsts[1:]) if b < a)
        station_rss = sum(proc_rss_mb(b.proc.pid) for b in brokers) / n
        return [{"part": "events", "variant": f"{n} bridged station brokers, {rate:g} event/s each, uplink cut "
                                                f"{size['cut_s']:g} s", "stations": n,
                 "result": "0 lost, order kept" if not lost and not disorder else f"{lost} lost, {disorder} out of order",
                 "seconds": round(elapsed, 1), "sent": total, "lost": lost, "duplicates": dups,
                 "out_of_order": disorder, "drain_s": round(drain, 1), "msgs_per_s": round(total / elapsed, 1),
                 "broker_cpu_pct": round(100 * cpu / elapsed, 1), "broker_rss_mb": round(proc_rss_mb(central.proc.pid), 1),
                 "note": f"queued during the cut: {round(rate * size['cut_s'])} per station; a station broker "
                         f"{station_rss:.1f} MB RSS; TLS, a user per station, the shipped ACL; cut at "
                         f"{t_cut - t_start:.0f} s{gave_up}"}]
    finally:
        stop.set()
        for _, c in pubs:
            c.disconnect()
            c.loop_stop()
        if collector is not None:
            collector.close()
        for b in [*brokers, central]:
            try:
                b.stop()
            except subprocess.TimeoutExpired:
                b.proc.kill()
        proxy.close()


def add_users_bulk(passwd: Path, users: dict[str, str]) -> None:
    """mosquitto_passwd for many users: one call per user is what the README shows; a batch file is faster."""
    batch = passwd.with_suffix(".batch")
    batch.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(batch)], check=True, capture_output=True)
    batch.rename(passwd)


# ---------------------------------------------------------------------------------------------------------- load


def load_rows(work: Path, size: dict) -> list[dict]:
    n, procs_n = size["load_stations"], size["load_procs"]
    broker = Broker(work / "load_broker").start()
    procs = []
    try:
        per = -(-n // procs_n)
        for k in range(procs_n):
            names = [f"ld{i:04d}" for i in range(k * per, min(n, (k + 1) * per))]
            spec = {"host": broker.host, "port": broker.port, "stations": names, "report_s": size["load_report_s"],
                    "events_per_s": size["load_rate"]}
            (work / f"load{k}.json").write_text(json.dumps(spec))
            procs.append(spawn([sys.executable, str(Path(__file__).parent / "fleet_sim.py"), "load",
                                "--spec", str(work / f"load{k}.json")], stdout=open(work / f"load{k}.log", "w"),
                               stderr=subprocess.STDOUT))
        wait(lambda: all("connected" in (work / f"load{k}.log").read_text() for k in range(procs_n)),
             f"{n} load clients connected")
        time.sleep(2.0)
        cpu0, t0 = proc_cpu_s(broker.proc.pid), time.monotonic()
        time.sleep(size["load_s"])
        cpu = proc_cpu_s(broker.proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        rate = n * (size["load_rate"] + 1.0 / size["load_report_s"])
        return [{"part": "load", "variant": f"{n} stations on one broker: status every {size['load_report_s']:g} s, "
                                            f"{size['load_rate']:g} event/s each", "stations": n, "result": "measured",
                 "seconds": round(elapsed, 1), "msgs_per_s": round(rate, 1),
                 "broker_cpu_pct": round(100 * cpu / elapsed, 1), "broker_rss_mb": round(proc_rss_mb(broker.proc.pid), 1),
                 "note": "plain TCP, QoS 1, retained status; the publishers share this machine's 2 cores"}]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            stop_process(p, 30)
        broker.stop()


def estimate(rows: list[dict], facts: dict) -> str:
    """What 1,000 stations would take, from the measured rows, with the reasoning."""
    ev = next((r for r in rows if r["part"] == "events"), None)
    ld = next((r for r in rows if r["part"] == "load"), None)
    lines = ["What 1,000 stations would take (measured rows above, the rest estimated from them):", ""]
    if ld:
        lines.append(f"- Central broker: measured at {ld['stations']} clients, {ld['msgs_per_s']:g} msgs/s: "
                     f"{ld['broker_cpu_pct']:g} % of one core, {ld['broker_rss_mb']:g} MB. mosquitto is one thread: "
                     "CPU grows about linearly with messages per second, so ten times the event rate would need about "
                     f"{min(100.0, 10 * ld['broker_cpu_pct']):.0f} % of a core; past one core, split stations across "
                     "brokers or use a cluster (EMQX) behind the same topics.")
    if ev:
        lines.append(f"- Uplink cuts: {ev['stations']} bridges queued {ev['sent']} events without loss; a station "
                     "broker holds what its own station sends (max_queued_messages 200000 in the shipped config, "
                     f"about {200000 * 0.5 / 1024:.0f} MB at 0.5 KB an event), so 1,000 stations cost the central "
                     f"broker only the drain burst: {ev['drain_s']:g} s here for {ev['stations']} stations, "
                     "bounded by the bridges' restart_timeout backoff (30 s) plus send time.")
    if facts:
        per = facts["bundle_bytes"]
        lines.append(f"- Rollout: each station fetches one bundle ({per} bytes here; a 256x256 rd bundle with an "
                     f"engine is 20-60 MB) plus a few KB of TUF metadata: 1,000 stations fetch {1000 * per / 1e9:.2f} "
                     "GB from the store per version; S3 serves that in parallel, a single web server at 1 Gbit/s "
                     f"in about {1000 * per * 8 / 1e9:.0f} s. Time is set by the groups' soak, not the fetch: "
                     f"{facts['stations']} stations took {facts['rollout_s']:g} s here with short soaks; with 5 groups "
                     "and soak_s 300, a rollout takes about 25 minutes whatever the station count.")
        lines.append("- Polling: a refresh that finds nothing new reads timestamp.json (about 0.5 KB): 1,000 stations "
                     "at poll_s 300 make 3.3 small requests a second; an MQTT notify makes them look at once (1,000 "
                     "small fetches in a burst).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="rollout,events,load", help="which parts to run (comma-separated)")
    common.add_smoke_args(ap)
    args = ap.parse_args()
    size = SIZES["smoke" if args.smoke else "full"]
    root = common.smoke_folder(args.out) if args.smoke else Path(args.out or "/tmp/edge_ad_fleet_bench")
    if not args.smoke:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        common.smoke_folder(str(root / "model"))  # the demo part's data, for the tiny model
        common.RESULTS = Path(__file__).parent / "results"
    data = (root / "model" if not args.smoke else root) / "data" / common.SMOKE_DATASET
    pt = common.smoke_model(root / "model" if not args.smoke else root)
    onnx = pt.with_suffix(".onnx")
    if not onnx.is_file():
        from edge_ad.deploy.export import export_onnx

        export_onnx(pt, onnx)
    parts = set(args.parts.split(","))
    rows: list[dict] = []
    facts: dict = {}
    def fresh(name: str) -> Path:  # each part's own empty work folder
        work = root / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return work

    for name in ("rollout", "events", "load"):
        if name not in parts:
            continue
        if name == "rollout":
            r, facts = rollout_rows(fresh(name), onnx, data / "train" / "good", size)
        else:
            r = (event_rows if name == "events" else load_rows)(fresh(name), size)
        rows += r
        print(json.dumps(r, indent=1), flush=True)
    kept = [r for r in common.load_rows("fleet") if r.get("part") not in parts]  # rows of parts not run now
    if not facts:
        facts = common.load_doc("fleet").get("facts", {})
    path = write_results("fleet", kept + rows, COLUMNS, notes=estimate(kept + rows, facts))
    doc = json.loads(path.read_text())
    doc["facts"] = facts
    path.write_text(json.dumps(doc, indent=1, default=float))


if __name__ == "__main__":
    main()
