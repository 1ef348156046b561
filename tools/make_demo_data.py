#!/usr/bin/env python3
"""Draw the procedural demo part (machined disc with scratches, holes, stains) as an MVTec-layout category.

Example: python tools/make_demo_data.py data/demo_disc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import edge_ad  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_ad.training.demo_data import make_demo_data
from edge_ad.errors import EdgeAdError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="category folder to create (e.g. data/demo_disc)")
    parser.add_argument("--n-train", type=int, default=60, help="good training images")
    parser.add_argument("--n-test-good", type=int, default=20, help="good test images")
    parser.add_argument("--n-test-bad", type=int, default=30, help="defective test images, split over the types")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        out = make_demo_data(args.out_dir, n_train=args.n_train, n_test_good=args.n_test_good,
                             n_test_bad=args.n_test_bad, size=args.size, seed=args.seed,
                             overwrite=args.overwrite, progress=not args.quiet)
    except EdgeAdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
