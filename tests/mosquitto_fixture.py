"""A real mosquitto broker on a free loopback port, started and stopped by tests (restartable on the same port)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def mosquitto_binary() -> str | None:
    """mosquitto on PATH (Debian installs it in /usr/sbin: a user whose PATH lacks it adds it). PATH only, so that
    a run with mosquitto taken off PATH really has none (tests/test_strict_ci.py)."""
    return shutil.which("mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Popen preexec_fn: the child gets SIGTERM when the thread that started it ends. Linux ties PDEATHSIG to that
    thread, not to the process, so start children with `spawn` (one thread that lives as long as the process)."""
    import ctypes
    import signal as _signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, _signal.SIGTERM)


_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")  # its one thread lives with the process


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen for a helper process (broker, store, station) that dies with this process, even when killed
    (a killed test or benchmark leaves none behind), and not before it: a broker restarted from a short-lived fault
    thread was SIGTERMed a second later when that thread ended (the trigger benchmark then waited forever)."""
    return _SPAWNER.submit(subprocess.Popen, args, preexec_fn=die_with_parent, **kwargs).result()


class Broker:
    """One mosquitto process; `stop()` then `start()` brings it back on the same port (a broker outage)."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False, extra_conf: str = ""):
        self.binary = mosquitto_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true" if "password_file" not in extra_conf else "allow_anonymous false",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to user `mosquitto`
            extra_conf,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> "Broker":
        assert self.binary, "mosquitto not installed"
        self.proc = spawn([self.binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)  # a killed run leaks none
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()} {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        """SIGTERM: a clean broker shutdown (persistent sessions are saved when enabled)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Build brokers with options; every broker made is stopped at teardown."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed or not on PATH: apt-get install -y mosquitto (in /usr/sbin)")
    brokers: list[Broker] = []

    def make(name: str = "broker", **kwargs) -> Broker:
        broker = Broker(tmp_path / name, **kwargs)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory) -> Broker:
    """A running broker with default settings (anonymous, no persistence)."""
    return mosquitto_factory().start()
