#!/usr/bin/env python3
"""Time TensorRT engines the way the station runs them: one frame, host -> GPU -> host, batch 1.

    python benchmarks/engine.py ENGINE [ENGINE ...] [--iters 200] [--warmup 20] [--name engine]
    python benchmarks/engine.py --smoke [--out DIR]     # the demo model, built and timed for a few frames

Writes benchmarks/results/<name>.json and .md in the common format (machine, date, command, versions, rows), with
the GPU, the TensorRT version and, on a Jetson, the power mode (nvpmodel -q, see jetson/POWER.md) in each row: fix
the power mode first, it changes every timing. Exit codes: 0 done, 1 a problem, 2 TensorRT 8.6+ is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.runtime import tensorrt as trt_backend  # noqa: E402

DEFAULT_ITERS = 200
DEFAULT_WARMUP = 20
SMOKE_WARMUP = 2
SEED = 0
MIB = 1 << 20
NVPMODEL_TIMEOUT_S = 5
EXIT_ERROR = 1
EXIT_NO_TENSORRT = 2
COLUMNS = [("engine", "engine"), ("precision", "precision"), ("variant", "device"), ("ms_median", "ms median"),
           ("ms_p99", "ms p99"), ("fps", "fps"), ("gpu_mem_mb", "GPU MiB"), ("gpu", "GPU"), ("nvpmodel", "power mode")]


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
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=NVPMODEL_TIMEOUT_S, check=False)
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
        return {
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
            "gpu": trt_backend.gpu_name(),
            "tensorrt": trt_backend.tensorrt_version(),
            "nvpmodel": nvpmodel_mode(),
        }


def smoke_engines(out: str | None) -> list[Path]:
    """The demo model exported and built as an fp16 engine with the export verb (what a Jetson install does)."""
    from edge_ad.deploy.pipeline import ExportOptions, export

    root = common.smoke_folder(out)
    return export(common.smoke_model(root), ExportOptions(format="engine", precision="fp16"))[-1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engines", nargs="*", type=Path, help="TensorRT engines (edge_ad export MODEL --format engine)")
    ap.add_argument("--iters", type=int, default=DEFAULT_ITERS)
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    ap.add_argument("--name", default="engine", help="results file name: benchmarks/results/<name>.json and .md")
    common.add_smoke_args(ap)
    args = ap.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        ap.error("--iters must be >= 1 and --warmup >= 0")
    if not args.engines and not args.smoke:
        ap.error("give ENGINE files, or --smoke")
    try:
        trt_backend.import_tensorrt()
    except EdgeAdError as exc:  # absent, or older than TensorRT 8.6
        print(exc, file=sys.stderr)
        return EXIT_NO_TENSORRT
    iters, warmup = (common.SMOKE_FRAMES, SMOKE_WARMUP) if args.smoke else (args.iters, args.warmup)
    try:
        engines = smoke_engines(args.out) if args.smoke else args.engines
        rows = [bench(engine, iters, warmup) for engine in engines]
    except EdgeAdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    path = common.write_results(args.name, rows, COLUMNS)
    for row in rows:
        print(f"{row['engine']}: median {row['ms_median']:.2f} ms, p99 {row['ms_p99']:.2f} ms, "
              f"{row['fps']:.1f} fps, GPU memory {row['gpu_mem_mb']} MiB")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
