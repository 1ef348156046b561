"""Strict mode: under CI=true a test that would skip because mosquitto is missing fails, naming mosquitto; a
hardware-only test (TensorRT) still skips. Runs pytest in a subprocess with mosquitto taken off PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES = ["tests/test_alarms_mqtt.py::test_retained_status_online_then_offline_on_clean_close",  # needs the broker
         "tests/test_tensorrt.py::test_stale_engine_is_refused"]  # needs TensorRT and a GPU: hardware, still a skip


def run_without_mosquitto(*options: str, **env) -> subprocess.CompletedProcess:
    """pytest on NODES with every PATH entry that holds a mosquitto removed, CI settings only as given."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "mosquitto").exists()]
    child = {k: v for k, v in os.environ.items() if k not in ("CI", "EDGE_AD_STRICT")}
    child.update(PATH=os.pathsep.join(path), **env)
    assert shutil.which("mosquitto", path=child["PATH"]) is None
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *options, *NODES], cwd=ROOT, env=child,
                          capture_output=True, text=True, timeout=300)


def test_ci_fails_naming_mosquitto_when_it_is_missing_and_hardware_tests_still_skip():
    gpu = shutil.which("nvidia-smi") is not None  # where TensorRT could run, the second node may pass instead
    strict = run_without_mosquitto(CI="true")  # as CI runs it: on pytest-xdist workers (pytest.ini)
    assert strict.returncode == 1, strict.stdout[-3000:]
    assert "mosquitto is missing: under CI=true this skip is a failure" in strict.stdout
    assert "1 error" in strict.stdout and (gpu or "1 skipped" in strict.stdout)  # a fixture skip: a setup error
    assert "TensorRT not installed" in strict.stdout or gpu  # the skip's reason is listed at the end (-rs)


def test_without_ci_the_same_run_skips_and_passes():
    plain = run_without_mosquitto("-n", "0")  # in one process, the other way the suite runs
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert "mosquitto not installed or not on PATH" in plain.stdout
