"""Every benchmark script still runs: its --smoke mode (the demo part, a few frames, seconds) into a temp folder.

A benchmark is only run by hand, so an API change elsewhere breaks it silently (speed.py stopped at an ImportError
for weeks). The smoke runs of one process share one folder in the order the real ones do: accuracy.py trains the
model int8.py, loop.py and pruning.py start from (each trains it itself when run alone). Each is its own pytest-xdist
group, so the runs spread over the workers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SMOKED = ["accuracy", "int8", "loop", "pruning", "speed", "calibrate", "trigger", "fleet"]  # in dependency order
NOT_SMOKED = {  # scripts without a smoke mode yet, and why
    "reliability": "its trials start brokers, stations and full disks; tests/test_station_faults.py and "
                   "tests/test_fail_closed.py run the same cases fast",
    "fleet_sim": "the light stations benchmarks/fleet.py starts (its smoke run starts them too)",
}
NEEDS_TENSORRT = ["engine"]  # smoke runs that build and time a TensorRT engine: they skip where TensorRT is absent
SMOKE_TIMEOUT_S = 240  # each run takes 5-20 s on 2 busy cores; a hang fails instead of stalling CI


def committed_results(name: str) -> dict[str, str]:
    """Hashes of the committed benchmarks/results/<name>.* (other benchmarks may be writing theirs meanwhile)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((BENCH / "results").glob(f"{name}.*"))}


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_smoke")


def test_every_benchmark_script_has_a_smoke_run_or_a_reason():
    scripts = {p.stem for p in BENCH.glob("*.py") if 'if __name__ == "__main__"' in p.read_text()}
    assert scripts == set(SMOKED) | set(NEEDS_TENSORRT) | set(NOT_SMOKED)


def _param(name: str):
    """One smoke run, in its own xdist group (independent of the others); a TensorRT one skips without TensorRT."""
    from edge_ad.runtime.tensorrt import tensorrt_version

    marks = [pytest.mark.xdist_group(f"benchmark_smoke_{name}")]
    if name in NEEDS_TENSORRT:
        marks.append(pytest.mark.skipif(tensorrt_version() is None,
                                        reason="TensorRT not installed: needs a Jetson or NVIDIA GPU"))
    return pytest.param(name, marks=marks)


@pytest.mark.parametrize("name", [_param(n) for n in SMOKED + NEEDS_TENSORRT])
def test_benchmark_smoke_run(name, smoke_dir):
    before = committed_results(name)
    run = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--out", str(smoke_dir)],
                         capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((smoke_dir / "results" / f"{name}.json").read_text())
    assert doc["rows"] and doc["versions"] and "--smoke" in doc["command"]
    assert (smoke_dir / "results" / f"{name}.md").read_text().count("\n|") >= len(doc["rows"])
    assert committed_results(name) == before  # a smoke run never touches the committed tables
