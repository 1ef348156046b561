#!/usr/bin/env python3
"""Time a TensorRT engine the way the station runs it: one frame, host -> GPU -> host, batch 1.

    python tools/bench_engine.py ENGINE [--iters 200] [--warmup 20] [--json OUT.json]

Reports median/p99 latency, throughput and GPU memory, and writes them as a benchmark JSON (machine,
date, command, versions, rows). On a Jetson, fix the power mode first (see jetson/POWER.md): the
nvpmodel mode is recorded with the result. Exit codes: 0 done, 1 a problem, 2 TensorRT 8.6+ not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.runtime import tensorrt as trt_backend  # noqa: E402

DEFAULT_ITERS = 200
DEFAULT_WARMUP = 20
SEED = 0
MIB = 1 << 20
EXIT_ERROR = 1
EXIT_NO_TENSORRT = 2


def summarize(latencies_ms: list[float]) -> dict:
    """Latency statistics in milliseconds; fps is what one stream sustains at the median."""
    if not latencies_ms:
        raise ValueError("no latencies to summarize")
    ms = np.asarray(latencies_ms, dtype=np.float64)
    median = float(np.median(ms))
    return {
        "ms_median": median,
        "ms_p99": float(np.percentile(ms, 99)),
        "ms_mean": float(ms.mean()),
        "ms_min": float(ms.min()),
        "ms_max": float(ms.max()),
        "fps": 1000.0 / median if median > 0 else float("inf"),
    }


def nvpmodel_mode() -> str | None:
    """Jetson power mode (nvpmodel -q), which changes every timing; None off-Jetson."""
    exe = shutil.which("nvpmodel")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return "; ".join(lines[:2]) or None


def bench(engine: Path, iters: int, warmup: int) -> dict:
    """One result row for this engine."""
    cuda = trt_backend.open_cuda()
    try:
        free_before, total = cuda.mem_info()
    finally:
        cuda.close()
    with trt_backend.TensorRTSession(engine) as session:
        free_after, _ = session.gpu_memory()
        x = np.random.default_rng(SEED).standard_normal(session.input_shape).astype(np.float32)
        for _ in range(warmup):
            session.run(x)
        latencies = []
        for _ in range(iters):
            start = time.perf_counter()
            session.run(x)
            latencies.append((time.perf_counter() - start) * 1000.0)
        activation = session.engine_memory_bytes()
        record = session.build_record
        row = {
            "backend": "tensorrt",
            "precision": record.get("precision", "unknown"),
            "variant": f"dla{record['dla_core']}" if record.get("dla_core") is not None else "gpu",
            "engine": engine.name,
            "input_shape": list(session.input_shape),
            "outputs": session.output_names,
            "iters": iters,
            "warmup": warmup,
            **summarize(latencies),
            "gpu_mem_mb": round((free_before - free_after) / MIB, 1),
            "gpu_total_mb": round(total / MIB, 1),
            "engine_activation_mb": round(activation / MIB, 1) if activation is not None else None,
        }
    return row


def write_json(path: Path, row: dict) -> None:
    doc = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "gpu": trt_backend.gpu_name(),
            "nvpmodel": nvpmodel_mode(),
        },
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "versions": {"tensorrt": trt_backend.tensorrt_version(), "numpy": np.__version__},
        "rows": [row],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engine", type=Path)
    ap.add_argument("--iters", type=int, default=DEFAULT_ITERS)
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        ap.error("--iters must be >= 1 and --warmup >= 0")
    try:
        trt_backend.import_tensorrt()
    except EdgeAdError as exc:  # absent, or older than TensorRT 8.6
        print(exc, file=sys.stderr)
        return EXIT_NO_TENSORRT
    try:
        row = bench(args.engine, args.iters, args.warmup)
        if args.json:
            write_json(args.json, row)
    except EdgeAdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{row['engine']}: median {row['ms_median']:.2f} ms, p99 {row['ms_p99']:.2f} ms, "
          f"{row['fps']:.1f} fps, GPU memory {row['gpu_mem_mb']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
