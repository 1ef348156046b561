"""`edge_ad doctor`: check the machine a station runs on and say how to fix what is missing.

Each check is one small function returning a Check; nothing here changes the system. Device-only
packages are imported inside their check, so the doctor itself runs anywhere.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_ad.station.config import StationConfig

from edge_ad.station.config import MqttConfig

MIN_PYTHON = (3, 10)
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")
SUPPORTED_L4T_MAJOR = 36  # JetPack 6
JETPACK_BY_L4T = {36: "6", 35: "5", 34: "5 (developer preview)", 32: "4"}
CAMERA_GLOB = "/dev/video*"
GPIO_GLOB = "/dev/gpiochip*"
CUDART_GLOBS = ("/usr/local/cuda*/lib64/libcudart.so*", "/usr/lib/aarch64-linux-gnu/libcudart.so*")
DEFAULT_MQTT_HOST = "127.0.0.1"  # the doctor checks a broker on this machine unless told another
DEFAULT_MQTT_PORT = MqttConfig.port
DEFAULT_DISK_PATH = "."
MIN_FREE_MB = 1024  # engines, recordings and bundle updates need room
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 5.0


@dataclass
class Check:
    """One line of the report; `optional` checks only matter for some stations (a camera, GPIO, MQTT)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def run_doctor(
    mqtt_host: str = DEFAULT_MQTT_HOST,
    mqtt_port: int = DEFAULT_MQTT_PORT,
    disk_path: str | Path = DEFAULT_DISK_PATH,
    min_free_mb: int = MIN_FREE_MB,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> list[Check]:
    """All checks, in the order a person would fix them."""
    return [
        check_python(),
        check_jetpack(),
        check_tensorrt(),
        check_cuda(),
        check_onnxruntime(),
        check_cameras(),
        check_gpio(),
        check_mqtt(mqtt_host, mqtt_port, timeout_s),
        check_disk(disk_path, min_free_mb),
    ]


def doctor_ok(checks: list[Check]) -> bool:
    """True when every required check passed (optional ones may fail)."""
    return all(c.ok or c.optional for c in checks)


def format_report(checks: list[Check]) -> str:
    """Aligned text: status, name, detail, and the fix under each failing check."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        status = "ok" if c.ok else ("WARN" if c.optional else "FAIL")
        lines.append(f"[{status:>4}] {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':>7} {'':<{width}}  fix: {c.fix}")
    failed = [c.name for c in checks if not c.ok and not c.optional]
    warned = [c.name for c in checks if not c.ok and c.optional]
    if failed:
        lines.append(f"{len(failed)} required check(s) failed: {', '.join(failed)}")
    else:
        lines.append("all required checks passed" + (f"; warnings: {', '.join(warned)}" if warned else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checks


def check_python() -> Check:
    version = ".".join(str(v) for v in sys.version_info[:3])
    ok = sys.version_info[:2] >= MIN_PYTHON
    need = ".".join(str(v) for v in MIN_PYTHON)
    return Check("python", ok, f"Python {version} at {sys.executable}", "" if ok else f"use Python >= {need}")


def parse_l4t_release(text: str) -> tuple[int, str] | None:
    """'# R36 (release), REVISION: 3.0, ...' -> (36, '36.3.0'); None when the text is not an L4T release line."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    major = int(match.group(1))
    return major, f"{major}.{match.group(2)}"


def check_jetpack(release_file: str | Path = L4T_RELEASE_FILE) -> Check:
    release_file = Path(release_file)
    fix = "flash the Jetson with JetPack 6 (L4T R36) using NVIDIA SDK Manager"
    try:
        text = release_file.read_text(errors="replace")
    except OSError:
        return Check("jetpack", False, f"not a Jetson ({release_file} absent)", fix, optional=True)
    parsed = parse_l4t_release(text)
    if parsed is None:
        return Check("jetpack", False, f"cannot read the L4T release from {release_file}", fix, optional=True)
    major, release = parsed
    jetpack = JETPACK_BY_L4T.get(major, "unknown")
    ok = major == SUPPORTED_L4T_MAJOR
    detail = f"L4T R{release} (JetPack {jetpack})" + ("" if ok else "; edge_ad is tested on JetPack 6")
    return Check("jetpack", ok, detail, "" if ok else fix, optional=True)


def check_tensorrt() -> Check:
    fix = (
        "on a Jetson: sudo apt-get install python3-libnvinfer and make the venv with --system-site-packages "
        "(jetson/install.sh does); on a desktop GPU: pip install tensorrt. onnxruntime runs without it"
    )
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:
        return Check("tensorrt", False, f"TensorRT not installed ({exc.__class__.__name__}: {exc})", fix, optional=True)
    from edge_ad.errors import EdgeAdError
    from edge_ad.runtime.tensorrt import check_tensorrt_version

    try:
        check_tensorrt_version(trt.__version__)  # the runtime refuses TensorRT older than 8.6
    except EdgeAdError as exc:
        return Check("tensorrt", False, str(exc), "flash JetPack 6 (TensorRT 8.6 / 10.3); onnxruntime runs meanwhile",
                     optional=True)
    return Check("tensorrt", True, f"TensorRT {trt.__version__}", optional=True)


def _cudart_paths() -> list[str]:
    found = [p for pattern in CUDART_GLOBS for p in sorted(glob.glob(pattern))]
    name = ctypes.util.find_library("cudart")
    if name and name not in found:
        found.insert(0, name)
    return found


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    cmd = [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def check_cuda(release_file: str | Path = L4T_RELEASE_FILE) -> Check:
    """A GPU the driver sees (nvidia-smi) or, on a Jetson, the CUDA runtime library (no nvidia-smi there)."""
    gpus = _nvidia_smi()
    libs = _cudart_paths()
    on_jetson = Path(release_file).exists()
    parts = ["GPU: " + gpus.replace("\n", "; ") if gpus else "no GPU seen by nvidia-smi"]
    if libs:
        parts.append(f"libcudart: {libs[0]}")
    ok = bool(gpus) or (on_jetson and bool(libs))
    if on_jetson and not libs:
        parts.append("no libcudart")
    detail = ", ".join(parts)
    fix = "" if ok else (
        "on a Jetson install JetPack's CUDA (sudo apt-get install nvidia-jetpack); on a PC install the NVIDIA "
        "driver and CUDA runtime. Without a GPU edge_ad runs on the CPU with onnxruntime"
    )
    return Check("cuda", ok, detail, fix, optional=True)


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", False, f"onnxruntime not importable ({exc})", "pip install onnxruntime")
    providers = ort.get_available_providers()
    detail = f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}"
    return Check("onnxruntime", True, detail)


def _devices(pattern: str) -> tuple[list[str], list[str]]:
    """(all matching device nodes, those this user can read and write)."""
    nodes = sorted(glob.glob(pattern))
    usable = [n for n in nodes if os.access(n, os.R_OK | os.W_OK)]
    return nodes, usable


def _device_check(name: str, pattern: str, what: str, fix_missing: str, fix_access: str) -> Check:
    """Device nodes that must exist and be readable/writable by this user (optional checks)."""
    nodes, usable = _devices(pattern)
    if not nodes:
        return Check(name, False, f"no {what} ({pattern})", fix_missing, optional=True)
    if not usable:
        return Check(name, False, f"{', '.join(nodes)} present but not accessible to this user", fix_access, True)
    return Check(name, True, ", ".join(usable), optional=True)


def check_cameras(pattern: str = CAMERA_GLOB) -> Check:
    return _device_check("cameras", pattern, "camera devices",
                         "connect a USB or CSI camera (v4l2-ctl --list-devices lists them); file and RTSP sources need none",
                         "add the service user to the 'video' group (jetson/install.sh does), then log in again")


def check_gpio(pattern: str = GPIO_GLOB) -> Check:
    return _device_check("gpio", pattern, "GPIO chips",
                         "GPIO alarms need a Jetson (or a board with /dev/gpiochip*); use the mqtt or log alarm elsewhere",
                         "install jetson/99-edge-ad-gpio.rules and add the user to the 'gpio' group (jetson/install.sh does)")


def check_mqtt(
    host: str = DEFAULT_MQTT_HOST, port: int = DEFAULT_MQTT_PORT, timeout_s: float = CONNECT_TIMEOUT_S
) -> Check:
    """Plain TCP connect: says whether a broker listens, without speaking MQTT or needing paho."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        fix = (
            "start the broker (sudo systemctl start mosquitto) or set the broker host/port in station.yaml; "
            "only needed for MQTT alarms"
        )
        return Check("mqtt", False, f"cannot connect to {host}:{port} ({reason})", fix, optional=True)
    return Check("mqtt", True, f"broker reachable at {host}:{port}", optional=True)


def check_disk(path: str | Path = DEFAULT_DISK_PATH, min_free_mb: int = MIN_FREE_MB) -> Check:
    """Free space where data goes; a path not created yet is measured at its nearest existing parent."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free // (1 << 20)
    ok = free_mb >= min_free_mb
    detail = f"{free_mb} MiB free of {usage.total // (1 << 20)} MiB at {probe}"
    fix = "" if ok else f"free at least {min_free_mb} MiB there (old recordings, engines, bundles)"
    return Check("disk", ok, detail, fix)


# ----------------------------------------------------------------------------- triggered line (with --config)


def station_checks(cfg: StationConfig, timeout_s: float = CONNECT_TIMEOUT_S) -> list[Check]:
    """What a station.yaml asks of this machine beyond the basics: the trigger input and the OPC UA endpoint."""
    return [check_trigger(cfg), check_opcua(cfg, timeout_s)]


def check_trigger(cfg: StationConfig) -> Check:
    """Triggered mode has a trigger source, and its GPIO input line opens (read only: nothing is driven)."""
    t = cfg.trigger
    if not t.enabled:
        return Check("trigger", True, "continuous mode (trigger.enabled: false)", optional=True)
    sources = [name for name, on in (("gpio", t.gpio_pin >= 0), ("mqtt", t.mqtt and cfg.mqtt.enabled),
                                     ("http", t.http and cfg.web.enabled), ("timer", t.timer_s > 0)) if on]
    if not sources:
        return Check("trigger", False, "trigger.enabled but no trigger source",
                     "set trigger.gpio_pin (a light barrier), or enable mqtt or web for MQTT / HTTP triggers")
    detail = f"sources: {', '.join(sources)}"
    if t.gpio_pin < 0:
        return Check("trigger", True, detail)
    if cfg.gpio.backend in ("none", "fake"):
        return Check("trigger", False, f"{detail}; gpio.backend {cfg.gpio.backend}: the trigger line "
                     f"{t.gpio_pin} is not read", "set gpio.backend: jetson or gpiod")
    from edge_ad.errors import EdgeAdError
    from edge_ad.station.gpio_input import make_input

    try:
        line = make_input(cfg.gpio, t.gpio_pin)
        line.start(lambda level, when: None)
        line.close()
    except (EdgeAdError, OSError, RuntimeError, ValueError) as exc:
        return Check("trigger", False, f"{detail}; input line {t.gpio_pin} ({cfg.gpio.backend}) does not open: {exc}",
                     "check the pin number, the wiring and the gpio group (jetson/install.sh)")
    return Check("trigger", True, f"{detail}; input line {t.gpio_pin} ({cfg.gpio.backend}, {t.gpio_edge} edge) opens")


def check_opcua(cfg: StationConfig, timeout_s: float = CONNECT_TIMEOUT_S) -> Check:
    """The station's OPC UA endpoint answers (a running station serves it): log in as configured, read the state."""
    o = cfg.opcua
    if not o.enabled:
        return Check("opcua", True, "off (opcua.enabled: false)", optional=True)
    try:
        import asyncio

        from asyncua import Client
    except ImportError:
        return Check("opcua", False, "opcua.enabled but asyncua is not installed", "pip install 'edge_ad[opcua]'")
    from edge_ad.station.opcua import endpoint, read_state

    url = endpoint(o.host, o.port)
    try:
        state = asyncio.run(read_state(Client, cfg, timeout_s))
    except Exception as exc:  # noqa: BLE001 - any failure to connect or read is the finding
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return Check("opcua", False, f"{url} does not answer: {reason}",
                     "start the station (systemctl start edge_ad): the endpoint is served by the station process; "
                     "check opcua.host/port and the log-in (opcua.username, password)")
    return Check("opcua", True, f"{url} answers: VisionSystem state {state}")
