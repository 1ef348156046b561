#!/usr/bin/env python3
"""Build (or reuse) a TensorRT engine for an exported edge_ad ONNX model, on the device that will run it.

    python tools/build_engine.py MODEL.onnx --precision fp16|int8|fp32 [--calib-cache F] [--workspace-mb N]
                                 [--dla N] [--out DIR] [--force]
    python tools/build_engine.py MODEL.onnx --check-only [--trt-version 8.6]   # no TensorRT needed

Prints the engine path and writes its build record beside it (MODEL.<precision>.<key>.build.json).
Exit codes: 0 built or reused, 1 a problem with the inputs or the build, 2 TensorRT 8.6+ is not installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.deploy import engine as trt_build  # noqa: E402
from edge_ad.deploy.trt_ops import DEFAULT_TRT_VERSION, check_onnx_ops  # noqa: E402
from edge_ad.runtime import tensorrt as trt_runtime  # noqa: E402

EXIT_ERROR = 1
EXIT_NO_TENSORRT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path, help="exported model (input 'image', outputs 'map0', 'map1', ... or 'map')")
    ap.add_argument("--precision", choices=trt_build.PRECISIONS, default=trt_build.DEFAULT_PRECISION)
    ap.add_argument("--calib-cache", type=Path, help="TensorRT calibration cache for int8 from a float (non-QDQ) ONNX")
    ap.add_argument("--workspace-mb", type=int, default=trt_build.DEFAULT_WORKSPACE_MB,
                    help="builder scratch memory limit")
    ap.add_argument("--dla", type=int, metavar="N", help="build for DLA core N (Jetson Orin AGX/NX), GPU fallback on")
    ap.add_argument("--out", type=Path, help="engine folder (default: beside the ONNX)")
    ap.add_argument("--force", action="store_true", help="rebuild even when a cached engine matches")
    ap.add_argument("--verbose", action="store_true", help="print TensorRT's build log")
    ap.add_argument("--check-only", action="store_true", help="only list ONNX ops TensorRT cannot import")
    ap.add_argument("--trt-version", help=f"TensorRT version for --check-only (default: installed, else "
                                          f"{DEFAULT_TRT_VERSION})")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        installed = trt_runtime.import_tensorrt().__version__
    except EdgeAdError as exc:  # absent, or older than TensorRT 8.6
        installed = None
        if not args.check_only:
            print(exc, file=sys.stderr)
            print("(python tools/build_engine.py MODEL.onnx --check-only checks the ops without TensorRT)",
                  file=sys.stderr)
            return EXIT_NO_TENSORRT
    try:
        target = args.trt_version or installed or DEFAULT_TRT_VERSION
        lacking = check_onnx_ops(args.onnx, target)
        if lacking:
            print(f"ops TensorRT {target} cannot import: {', '.join(lacking)}", file=sys.stderr)
        elif args.check_only:
            print(f"all ops of {args.onnx.name} are supported by TensorRT {target}")
        if args.check_only:
            return EXIT_ERROR if lacking else 0
        engine = trt_build.build_engine(
            args.onnx,
            args.out or args.onnx.parent,
            precision=args.precision,
            calib_cache=args.calib_cache,
            workspace_mb=args.workspace_mb,
            dla_core=args.dla,
            force=args.force,
            verbose=args.verbose,
        )
    except EdgeAdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
