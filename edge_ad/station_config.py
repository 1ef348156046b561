"""Station settings (camera, debounce, alarms, evidence) as dataclasses loaded from one YAML file.

Every default lives here. Unknown keys and wrong types raise EdgeAdError naming the key and the file,
so a typo in /etc/edge_ad/station.yaml is one clear line, not a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edge_ad.config import ConfigError, from_dict
from edge_ad.errors import EdgeAdError

# Jetson CSI camera (Argus). Fields: sensor_id, width, height, fps, flip. Same text as jetson/pipelines/csi.txt.
CSI_PIPELINE = (
    "nvarguscamerasrc sensor-id={sensor_id} ! "
    "video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
    "nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
    "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
)


@dataclass
class CameraConfig:
    """How frames are captured; `source` is a URI (see edge_ad.camera)."""

    source: str = "csi://0"
    width: int = 1920  # requested from V4L2 / CSI; files and streams keep their own size
    height: int = 1080
    fps: float = 30.0  # requested from V4L2 / CSI; pace of a folder source in realtime mode
    flip: int = 0  # nvvidconv flip-method for CSI (0 none, 2 rotate 180)
    fourcc: str = ""  # V4L2 pixel format to request, e.g. MJPG (USB cameras need it for 1080p at 30 fps)
    rtsp_tcp: bool = True  # RTSP over TCP: no smeared frames from lost UDP packets
    csi_pipeline: str = CSI_PIPELINE
    file_mode: str = "every"  # files/folders: every (no drops, in order) | realtime (paced, drops) | latest
    live: bool = False  # replay a file/folder like a camera: paced at its fps, reopened at the end or on failure
    reconnect_min_s: float = 0.5  # first backoff delay after a live source fails twice in a row
    reconnect_max_s: float = 30.0
    open_timeout_s: float = 10.0  # network streams (RTSP/HTTP) only
    read_timeout_s: float = 5.0


@dataclass
class DebounceConfig:
    """Raise the alarm when `min_anomalous` of the last `window` frames are anomalous; keep it `hold_s`."""

    window: int = 5
    min_anomalous: int = 3
    hold_s: float = 2.0


@dataclass
class MqttConfig:
    """MQTT alarm sink; events go through an on-disk queue so a broker outage loses nothing."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    client_id: str = ""  # empty: edge_ad-<station>-<part>
    topic_prefix: str = "edge_ad"  # topics: <prefix>/<station>/<part>/event and .../status
    qos: int = 1
    keepalive_s: int = 30
    username: str = ""
    password_env: str = ""  # name of an environment variable holding the password
    password_file: str = ""  # or a file holding it (first line); the password is never logged
    tls: bool = False
    ca_file: str = ""  # empty with tls: the system CA store
    cert_file: str = ""  # client certificate (mutual TLS), optional
    key_file: str = ""
    tls_insecure: bool = False  # skip host name check (test benches only)
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    queue_dir: str = "/var/lib/edge_ad/mqtt_queue"
    queue_max: int = 10000  # events kept while the broker is down; oldest dropped beyond this
    queue_fsync: bool = True  # survive power loss; costs a few ms per event on SD cards
    ack_timeout_s: float = 60.0  # republish an event the broker never acknowledged (at-least-once)
    close_timeout_s: float = 3.0  # on shutdown, wait this long for queued events to go out


@dataclass
class GpioConfig:
    """A digital output raised on an alarm: a pulse per event, or held while the alarm is on."""

    enabled: bool = False
    backend: str = "none"  # jetson (Jetson.GPIO) | gpiod (libgpiod) | none | fake (records, for tests)
    pin: int = 7  # Jetson.GPIO: number in `numbering`; gpiod: line offset on `chip`
    numbering: str = "BOARD"  # Jetson.GPIO pin numbering: BOARD | BCM | CVM | TEGRA_SOC
    chip: str = "/dev/gpiochip0"  # gpiod only
    active_high: bool = True
    mode: str = "hold"  # hold (level follows the alarm) | pulse (pulse_s per event)
    pulse_s: float = 0.5


@dataclass
class EvidenceConfig:
    """Where alarm evidence (original, heatmap overlay, boxes JSON) goes, and how much of it to keep."""

    enabled: bool = True
    dir: str = "/var/lib/edge_ad/evidence"
    max_mb: float = 2048.0  # MiB; oldest events are deleted beyond this
    max_events: int = 0  # 0: no count limit
    jpeg_quality: int = 90
    original_format: str = "jpg"  # jpg | png (lossless, for relabelling and retraining)
    min_box_area: int = 16  # pixels at frame size; smaller regions are noise


@dataclass
class ServiceConfig:
    """systemd integration: how often STATUS= is refreshed (WATCHDOG pacing comes from systemd)."""

    status_interval_s: float = 5.0


@dataclass
class StationConfig:
    """One inspection station: one camera, one part bundle, its alarms."""

    station: str = "station1"
    part: str = ""
    parts_dir: str = "/var/lib/edge_ad/parts"
    bundle: str = ""  # empty: <parts_dir>/<part>/current
    runtime: str = "onnxruntime"  # onnxruntime | tensorrt
    threshold: Union[float, None] = None  # None: the bundle's calibrated threshold
    log_level: str = "INFO"
    roi: Union[list[int], None] = None  # [x, y, width, height] of the frame to inspect; None: whole frame
    frame_log: str = "/var/log/edge_ad/frames.jsonl"  # one JSON line per frame; empty: off
    preview: bool = False  # show a window with the heatmap (needs a display and a GUI build of OpenCV)
    camera: CameraConfig = field(default_factory=CameraConfig)
    debounce: DebounceConfig = field(default_factory=DebounceConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def bundle_dir(self) -> Path:
        """The part bundle this station runs."""
        return Path(self.bundle) if self.bundle else Path(self.parts_dir) / self.part / "current"


_CHOICES = {
    "camera.file_mode": ("every", "realtime", "latest"),
    "mqtt.qos": (0, 1, 2),
    "gpio.backend": ("jetson", "gpiod", "none", "fake"),
    "gpio.mode": ("hold", "pulse"),
    "gpio.numbering": ("BOARD", "BCM", "CVM", "TEGRA_SOC"),
    "evidence.original_format": ("jpg", "png"),
    "runtime": ("onnxruntime", "tensorrt"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
}
_POSITIVE = (
    "camera.width", "camera.height", "camera.fps", "camera.open_timeout_s", "camera.read_timeout_s",
    "camera.reconnect_min_s", "camera.reconnect_max_s", "debounce.window", "debounce.min_anomalous",
    "mqtt.port", "mqtt.keepalive_s", "mqtt.reconnect_min_s", "mqtt.reconnect_max_s", "mqtt.queue_max",
    "mqtt.ack_timeout_s", "gpio.pulse_s", "evidence.max_mb", "service.status_interval_s",
)
_NON_NEGATIVE = ("debounce.hold_s", "mqtt.close_timeout_s", "evidence.max_events", "gpio.pin", "evidence.min_box_area")


def load_station_config(path: str | Path) -> StationConfig:
    """Read a station YAML file; every key is checked against the dataclasses above."""
    path = Path(path)
    if not path.is_file():
        raise EdgeAdError(f"station config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EdgeAdError(f"{path}: not valid YAML: {exc}") from None
    return station_config_from_dict(data, source=str(path))


def station_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> StationConfig:
    """Build and validate a StationConfig from plain data (YAML already parsed)."""
    try:
        cfg = from_dict(StationConfig, data)
    except ConfigError as exc:
        raise EdgeAdError(f"{source}: {exc}") from None
    _validate(cfg, source)
    return cfg


def _get(cfg: StationConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _validate(cfg: StationConfig, source: str) -> None:
    def fail(key: str, why: str) -> None:
        raise EdgeAdError(f"{source}: {key}: {why}, got {_get(cfg, key)!r}")

    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            fail(key, f"must be one of {', '.join(map(str, choices))}")
    for key in _POSITIVE:
        if _get(cfg, key) <= 0:
            fail(key, "must be > 0")
    for key in _NON_NEGATIVE:
        if _get(cfg, key) < 0:
            fail(key, "must be >= 0")
    if cfg.debounce.min_anomalous > cfg.debounce.window:
        fail("debounce.min_anomalous", f"must be <= debounce.window ({cfg.debounce.window})")
    if not 1 <= cfg.evidence.jpeg_quality <= 100:
        fail("evidence.jpeg_quality", "must be in 1..100")
    if cfg.mqtt.password_env and cfg.mqtt.password_file:
        fail("mqtt.password_file", "cannot be combined with mqtt.password_env")
    for key in ("station", "mqtt.topic_prefix"):
        value = _get(cfg, key)
        if not value or any(c in value for c in "+#"):
            fail(key, "must be non-empty without MQTT wildcards (+, #)")
    if any(c in cfg.part for c in "/+#"):
        fail("part", "must not contain '/', '+' or '#'")
    if "/" in cfg.station:
        fail("station", "must not contain '/'")
    if cfg.camera.reconnect_max_s < cfg.camera.reconnect_min_s:
        fail("camera.reconnect_max_s", "must be >= camera.reconnect_min_s")
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        fail("mqtt.reconnect_max_s", "must be >= mqtt.reconnect_min_s")
