"""kill -9 at random points of `edge_ad calibrate`, then the same command again: one row of the fault harness."""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from reliability_kit import ROOT, Env, fresh  # noqa: E402


from edge_ad import bundle as B  # noqa: E402


# ------------------------------------------------------------------------------------------------ calibrate


def trial_calibrate_kill(env: Env, args: argparse.Namespace) -> dict:
    """kill -9 during `edge_ad calibrate` (half at random times, half inside the bundle stage), then the same command
    again: no half-written bundle is ever `current`, no version is written twice, nothing is left behind."""
    from test_calibrate import TINY_RECIPE

    rng = random.Random(args.seed + 2)
    folder = fresh(env.work / "calibrate_kill")
    root, work = folder / "parts", folder / "work"
    cmd = [sys.executable, "-m", "edge_ad.cli", "calibrate", "--part", "p", "--source", str(env.data / "train" / "good"),
           "--parts-root", str(root), "--work", str(work)]
    for key, value in TINY_RECIPE.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    t0 = time.monotonic()
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    full_s = time.monotonic() - t0
    if first.returncode != 0:
        return {"cases": 0, "failures": 1, "note": f"calibrate does not run: {first.stderr.strip()[-300:]}"}
    half_loaded = dup = leftovers = rerun_failed = kills = attempts = recognised = 0
    modes = ("at a random time", "once .incoming-* holds 3 files", "as v<N+1> appears", "at a random time in bundle")
    run_s = full_s  # a later calibration reuses the captured images: its length is learnt from the reruns
    while kills < args.calibrate_kills and attempts < 2 * args.calibrate_kills:
        mode = modes[0] if kills % 2 == 0 else modes[1 + (kills // 2) % 3]
        log = folder / f"kill_{attempts:02d}.log"
        attempts += 1
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            kills += kill_when(proc, mode, rng, run_s, root, log)
        half_loaded += current_not_intact(root)
        t0 = time.monotonic()
        rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        run_s = time.monotonic() - t0 if "continuing" not in rerun.stdout else run_s
        rerun_failed += rerun.returncode != 0
        recognised += "was written before the interruption" in rerun.stdout  # 5e: switched to, not written again
        half_loaded += current_not_intact(root)
        stagings = [B.read_manifest(root / "p" / f"v{v}").get("staging") for v in B.versions(root, "p")]
        dup = max(dup, len(stagings) - len(set(stagings)))
        leftovers += len(B.leftovers(root, "p")) + len(list((root / "p").glob(".*.tmp")))
    versions = B.versions(root, "p")
    failures = half_loaded + dup + leftovers + rerun_failed + (kills < args.calibrate_kills)
    return {"cases": kills, "failures": failures, "kills": kills, "runs_that_finished_first": attempts - kills,
            "half_written_loaded": half_loaded, "duplicate_versions": dup, "leftovers_after_rerun": leftovers,
            "reruns_failed": rerun_failed, "reruns_that_found_their_bundle_written": recognised,
            "versions": len(versions), "calibrate_s": round(full_s, 1),
            "note": "kill modes: " + "; ".join(modes) + "; recipe: tests/test_calibrate.py TINY_RECIPE"}


def kill_when(proc: subprocess.Popen, mode: str, rng: random.Random, full_s: float, root: Path, log: Path) -> bool:
    """SIGKILL the calibrate at the chosen point; False when it finished before that point came."""
    part = root / "p"
    before = len(B.versions(root, "p"))
    if mode == "at a random time":
        deadline = time.monotonic() + rng.uniform(0.3, 0.95 * full_s)
        if not poll(proc, lambda: time.monotonic() >= deadline, 0.01):
            return False
    else:  # wait (coarsely) for the bundle stage, then watch finely for the moment
        if not poll(proc, lambda: re.search(r"\] bundle\s*$", log.read_text(), re.M) is not None, 0.01):
            return False
        if mode == "once .incoming-* holds 3 files":
            moment = lambda: any(len(list(p.iterdir())) >= 3 for p in part.glob(".incoming-*"))  # noqa: E731
        elif mode == "as v<N+1> appears":
            moment = lambda: len(B.versions(root, "p")) > before  # noqa: E731
        else:
            deadline = time.monotonic() + rng.uniform(0.0, 0.5)
            moment = lambda: time.monotonic() >= deadline  # noqa: E731
        if not poll(proc, moment, 0.0005):
            return False
    proc.kill()
    proc.wait()
    return True


def poll(proc: subprocess.Popen, cond, interval: float) -> bool:
    """Wait until cond() (True) or the process ends (False)."""
    while proc.poll() is None:
        try:
            if cond():
                return True
        except OSError:  # a folder renamed under the poll
            pass
        time.sleep(interval)
    return False


def current_not_intact(root: Path) -> int:
    """1 when `current` points at a bundle a station must not load (missing, partial, changed)."""
    link = root / "p" / B.CURRENT
    if not link.is_symlink():
        return 0
    return int(bool(B.damage(link.resolve())))
