"""Standalone INT8 quantization: same as `edge_ad quantize` (see --help)."""

import sys

from edge_ad.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))
