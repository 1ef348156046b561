"""Installed versions of what a result depends on: recorded in bundles and benchmark files to reproduce them."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("edge_ad", "numpy", "opencv-python-headless", "opencv-python", "onnx", "onnxruntime", "torch",
            "torch-pruning", "tensorrt")


def software_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python and each installed package's version (packages that are not installed are left out)."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out
