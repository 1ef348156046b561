"""TensorRT INT8 calibration cache (text format), so scales found off-device can build an engine on the Jetson.

Format, as TensorRT writes and reads it (one ASCII line each):

    TRT-<version>-<algorithm>           e.g. TRT-8601-EntropyCalibration2, TRT-100300-EntropyCalibration2
    <tensor name>: <scale as hex>       scale = amax / 127, the IEEE-754 float32 bits as 8 hex digits

TensorRT ignores a cache whose header names another TensorRT version or calibration algorithm, and then
tries to calibrate with data (which our cache-only calibrator does not have), so `retag` rewrites the
header for the TensorRT that will read it. Pure Python: runs anywhere.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.deploy.trt_ops import DEFAULT_TRT_VERSION  # retag() adapts a cache to the TensorRT that reads it
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write

DEFAULT_ALGORITHM = "EntropyCalibration2"
INT8_MAX = 127.0
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")


@dataclass
class CalibrationCache:
    """Parsed cache: version tag as written in the header (e.g. "8601"), algorithm, per-tensor scales."""

    version_tag: str
    algorithm: str = DEFAULT_ALGORITHM
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def header(self) -> str:
        return f"TRT-{self.version_tag}-{self.algorithm}"

    def amax(self) -> dict[str, float]:
        """Dynamic range per tensor (what set_dynamic_range or a QDQ scale needs)."""
        return {name: scale * INT8_MAX for name, scale in self.scales.items()}


def version_tag(trt_version: str) -> str:
    """TensorRT's NV_TENSORRT_VERSION as it appears in the header: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    parts = [int(p) for p in re.findall(r"\d+", trt_version)[:3]]
    if not parts:
        raise EdgeAdError(f"not a TensorRT version: {trt_version!r} (expected e.g. 8.6.1 or 10.3.0)")
    major, minor, patch = (parts + [0, 0])[:3]
    if major >= 10:  # NvInferVersion.h: major*10000 + minor*100 + patch from TensorRT 10 on
        return str(major * 10000 + minor * 100 + patch)
    return str(major * 1000 + minor * 100 + patch)


def scale_to_hex(scale: float) -> str:
    """Float32 bits, big-endian, as TensorRT prints them (8 lowercase hex digits)."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    value = int(text, 16)
    if value > 0xFFFFFFFF:
        raise ValueError(f"more than 32 bits: {text}")
    return struct.unpack(">f", value.to_bytes(4, "big"))[0]


def scales_from_amax(amax: dict[str, float]) -> dict[str, float]:
    """Per-tensor scale from the absolute max seen on calibration images (symmetric INT8)."""
    out = {}
    for name, value in amax.items():
        value = abs(float(value))
        if not math.isfinite(value):
            raise EdgeAdError(f"calibration range of tensor {name!r} is not finite: {value}")
        out[name] = value / INT8_MAX
    return out


def format_cache(cache: CalibrationCache) -> str:
    """The cache file's text; tensor order is kept as given."""
    if cache.algorithm not in ALGORITHMS:
        raise EdgeAdError(f"unknown calibration algorithm {cache.algorithm!r}; one of {', '.join(ALGORITHMS)}")
    lines = [cache.header]
    for name, scale in cache.scales.items():
        if not name or "\n" in name:
            raise EdgeAdError(f"tensor name cannot be written to a calibration cache: {name!r}")
        if not (math.isfinite(scale) and scale >= 0):
            raise EdgeAdError(f"calibration scale of tensor {name!r} must be finite and >= 0, got {scale}")
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str, source: str = "calibration cache") -> CalibrationCache:
    """Parse the text format; raises EdgeAdError naming the bad line."""
    lines = text.splitlines()
    if not lines:
        raise EdgeAdError(f"{source} is empty")
    match = _HEADER.match(lines[0].strip())
    if not match:
        raise EdgeAdError(
            f"{source}: first line {lines[0]!r} is not a TensorRT cache header like 'TRT-8601-EntropyCalibration2'"
        )
    cache = CalibrationCache(version_tag=match.group(1), algorithm=match.group(2))
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")  # tensor names may contain ':' but the scale never does
        try:
            if not sep or not name.strip():
                raise ValueError("no 'name: hex'")
            cache.scales[name.strip()] = hex_to_scale(value.strip())
        except ValueError as exc:
            raise EdgeAdError(f"{source} line {number}: {line!r} is not 'tensor_name: hex_scale' ({exc})") from None
    return cache


def retag(text: str, trt_version: str) -> str:
    """The same cache with its header naming `trt_version`, so that TensorRT accepts it."""
    cache = parse_cache(text)
    cache.version_tag = version_tag(trt_version)
    return format_cache(cache)


def write_cache(
    path: str | Path,
    scales: dict[str, float],
    trt_version: str = DEFAULT_TRT_VERSION,
    algorithm: str = DEFAULT_ALGORITHM,
) -> Path:
    """Write scales (amax / 127 per tensor) as a TensorRT calibration cache; returns the path."""
    path = Path(path)
    return atomic_write(path, format_cache(CalibrationCache(version_tag(trt_version), algorithm, dict(scales))))


def read_cache(path: str | Path) -> CalibrationCache:
    path = Path(path)
    if not path.is_file():
        raise EdgeAdError(f"calibration cache not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EdgeAdError(f"{path} is not a text TensorRT calibration cache") from None
    return parse_cache(text, source=str(path))
