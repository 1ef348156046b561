"""The systemd unit: its exposure, and the system calls of an unprivileged station against its filter (one row of the
fault harness)."""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from reliability_kit import ROOT, Env, fresh, station_cfg  # noqa: E402

from mosquitto_fixture import Broker, mosquitto_binary  # noqa: E402
from test_service import unit_settings  # noqa: E402  (the unit file's KEY=VALUE lines, as the unit tests read them)


UNIT_BEFORE = "6acf2a0^"  # the commit before the unit got its syscall filter and /proc, log and mount settings


# ------------------------------------------------------------------------------------------------ exposure


def trial_exposure(env: Env, args: argparse.Namespace) -> dict:
    """systemd-analyze security of the shipped unit, and strace of a station run as an unprivileged user against the
    unit's own SystemCallFilter (CPU path: onnxruntime, OpenCV, paho, waitress, sd_notify)."""
    if shutil.which("systemd-analyze") is None:
        return {"cases": 0, "failures": 0, "note": "skipped: systemd-analyze not installed"}
    folder = fresh(env.work / "exposure")
    unit_text = (ROOT / "jetson" / "edge_ad.service").read_text()
    before = subprocess.run(["git", "show", f"{UNIT_BEFORE}:jetson/edge_ad.service"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    exposure = unit_exposure(unit_text, folder / "now")
    row = {"cases": 2, "exposure": exposure, "exposure_before": unit_exposure(before, folder / "before") if before else "?"}
    outside, used, note = syscalls_outside_filter(env, folder, unit_text)
    row.update(syscalls_used=used, syscalls_outside_filter=len(outside) if outside is not None else "not checked")
    row["failures"] = int(not exposure <= 3.0) + (len(outside) if outside else 0)
    row["note"] = note + (f"; outside: {', '.join(sorted(outside))}" if outside else "")
    return row


def unit_exposure(text: str, folder: Path) -> float:
    """systemd-analyze security's overall exposure of a unit text (ExecStart pointed at an existing binary)."""
    folder.mkdir(parents=True)
    (folder / "edge_ad.service").write_text(text.replace("ExecStart=/opt/edge_ad/venv/bin/edge_ad ",
                                                         f"ExecStart={sys.executable} "))
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(folder / "edge_ad.service")],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for edge_ad.service: ([0-9.]+)", res.stdout)
    return float(m.group(1)) if m else float("nan")


def syscalls_outside_filter(env: Env, folder: Path, unit_text: str) -> tuple[set[str] | None, int, str]:
    if shutil.which("strace") is None or shutil.which("unshare") is None:
        return None, 0, "syscall check skipped: strace or unshare missing"
    allowed = filter_allow_list(unit_settings(unit_text)["SystemCallFilter"])
    run = folder / "run"
    run.mkdir()
    broker = Broker(folder / "broker").start() if mosquitto_binary() else None
    cfg = station_cfg(env, run, camera={"source": str(env.alternating), "live": True, "fps": 20.0},
                      mqtt={"enabled": bool(broker), "host": "127.0.0.1", "port": broker.port if broker else 1,
                            "queue_dir": str(run / "queue")},
                      gpio={"enabled": True, "backend": "fake", "fault_pin": 11})
    (run / "station.yaml").write_text(yaml.safe_dump(cfg))
    trace = folder / "strace.out"
    # an unmapped user namespace: the station runs as uid 65534 (no privilege, as the service user) while this
    # checkout and its Python stay readable wherever they are installed
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify (READY, WATCHDOG)
    notify.bind(str(run / "notify"))
    cmd = ["strace", "-f", "-qq", "-o", str(trace), "unshare", "--user", "env", f"HOME={run}",
           f"NOTIFY_SOCKET={run / 'notify'}", "WATCHDOG_USEC=1000000",
           sys.executable, "-m", "edge_ad.cli", "run", "--config", str(run / "station.yaml"), "--max-frames", "100"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    notify.close()
    if broker:
        broker.stop()
    used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace.read_text(), re.M))
    if res.returncode != 0:
        return None, len(used), f"syscall check: the unprivileged station failed: {res.stderr.strip()[-200:]}"
    return used - allowed, len(used), ("station run unprivileged (uid 65534, user namespace) under strace for 100 "
                                       "frames: onnxruntime, OpenCV, MQTT, web view, GPIO fake, sd_notify with a watchdog")


def filter_allow_list(lines: list[str]) -> set[str]:
    """The system calls an allow-list SystemCallFilter= sequence permits (groups expanded by systemd-analyze)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            current = s.split()[0]
            groups[current] = []
        elif current:
            groups[current].append(s.split()[0])

    def expand(items: list[str]) -> set[str]:
        names: set[str] = set()
        for item in items:
            names |= expand(groups.get(item, [])) if item.startswith("@") else {item}
        return names

    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split())
        allowed = allowed - names if deny else allowed | names
    return allowed
