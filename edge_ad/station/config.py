"""Station settings (camera, debounce, alarms, evidence) as dataclasses loaded from one YAML file.

Every default lives here. Unknown keys, wrong types and bad values raise ConfigError naming the key and
the file (edge_ad.config's one validation style), so a typo in /etc/edge_ad/station.yaml is one clear
line, not a silent default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union


from edge_ad.config import build, check, check_choice, read_yaml

RUNTIMES = ("auto", "onnxruntime", "tensorrt")
FILE_MODES = ("every", "realtime", "latest")


def _positive(obj: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        check(value > 0, key, f"must be > 0, got {value!r}")


def _non_negative(obj: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        check(value >= 0, key, f"must be >= 0, got {value!r}")

# Jetson CSI camera (Argus). Fields: sensor_id, width, height, fps, flip. Same text as jetson/pipelines/csi.txt.
CSI_PIPELINE = (
    "nvarguscamerasrc sensor-id={sensor_id} ! "
    "video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
    "nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
    "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
)


@dataclass
class CameraConfig:
    """How frames are captured; `source` is a URI (see edge_ad.station.camera)."""

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

    def validate(self) -> None:
        check_choice(self.file_mode, "file_mode", FILE_MODES)
        _positive(self, "width", "height", "fps", "open_timeout_s", "read_timeout_s", "reconnect_min_s", "reconnect_max_s")
        check(self.reconnect_max_s >= self.reconnect_min_s, "reconnect_max_s",
              f"must be >= camera.reconnect_min_s, got {self.reconnect_max_s!r}")


@dataclass
class DebounceConfig:
    """Raise the alarm when `min_anomalous` of the last `window` frames are anomalous; keep it `hold_s`."""

    window: int = 5
    min_anomalous: int = 3
    hold_s: float = 2.0

    def validate(self) -> None:
        _positive(self, "window", "min_anomalous")
        _non_negative(self, "hold_s")
        check(self.min_anomalous <= self.window, "min_anomalous",
              f"must be <= debounce.window ({self.window}), got {self.min_anomalous!r}")


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
    connect_timeout_s: float = 5.0  # warn (broker counted down) when a connection gets no answer this long
    close_timeout_s: float = 3.0  # on shutdown, wait this long for queued events to go out

    def validate(self) -> None:
        check_choice(self.qos, "qos", (0, 1, 2))
        _positive(self, "keepalive_s", "reconnect_min_s", "reconnect_max_s", "queue_max", "ack_timeout_s",
                  "connect_timeout_s")
        _non_negative(self, "close_timeout_s")
        check(1 <= self.port <= 65535, "port", f"must be a TCP port in 1..65535, got {self.port!r}")
        check(not (self.password_env and self.password_file), "password_file",
              "cannot be combined with mqtt.password_env")
        check(bool(self.topic_prefix) and not any(c in self.topic_prefix for c in "+#"), "topic_prefix",
              f"must be non-empty without MQTT wildcards (+, #), got {self.topic_prefix!r}")
        check(self.reconnect_max_s >= self.reconnect_min_s, "reconnect_max_s",
              f"must be >= mqtt.reconnect_min_s, got {self.reconnect_max_s!r}")


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
    fault_pin: int = -1  # a second output, active while the station cannot inspect (same backend); -1: none
    fault_active_high: bool = True
    alarm_on_fault: bool = False  # also hold the alarm output while in fault (one-line set-ups: no part passes unseen)

    def validate(self) -> None:
        check_choice(self.backend, "backend", ("jetson", "gpiod", "none", "fake"))
        check_choice(self.mode, "mode", ("hold", "pulse"))
        check_choice(self.numbering, "numbering", ("BOARD", "BCM", "CVM", "TEGRA_SOC"))
        _positive(self, "pulse_s")
        _non_negative(self, "pin")
        check(self.fault_pin >= -1 and self.fault_pin != self.pin, "fault_pin",
              f"must be -1 (none) or a line other than gpio.pin ({self.pin}), got {self.fault_pin!r}")


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
    min_free_mb: float = 200.0  # MiB; an event is not saved (and is counted) when its disk has less free space

    def validate(self) -> None:
        check_choice(self.original_format, "original_format", ("jpg", "png"))
        _positive(self, "max_mb")
        _non_negative(self, "min_free_mb")
        _non_negative(self, "max_events", "min_box_area")
        check(1 <= self.jpeg_quality <= 100, "jpeg_quality", f"must be in 1..100, got {self.jpeg_quality!r}")


@dataclass
class FaultConfig:
    """When the station cannot inspect it says so (MQTT status, GPIO fault line, health, log) and keeps retrying."""

    retry_s: float = 5.0  # retry a bundle that does not load (or a failing detector) this often
    camera_lost_s: float = 10.0  # a live camera without frames this long is a fault
    frame_errors: int = 5  # consecutive frames the detector fails on before it is a fault

    def validate(self) -> None:
        _positive(self, "retry_s", "camera_lost_s", "frame_errors")


@dataclass
class ServiceConfig:
    """systemd integration: how often STATUS= is refreshed (WATCHDOG pacing comes from systemd)."""

    status_interval_s: float = 5.0

    def validate(self) -> None:
        _positive(self, "status_interval_s")


@dataclass
class WebConfig:
    """The station's web view and Prometheus /metrics, served by the station process (off by default)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 (every interface) only with a token
    port: int = 8080  # 0: a free port, named in the start-up log line
    token_env: str = ""  # name of an environment variable holding the token for state changes
    token_file: str = ""  # or a file holding it (first line); never logged. Neither: state changes are off
    protect_read: bool = False  # pages, live view and /metrics need the token too (a log-in form sets a cookie)
    live_fps: float = 4.0  # most JPEGs per second the live view encodes (in the web thread, never in the loop)
    live_width: int = 640  # px; the live frame is shrunk to this width before encoding
    live_clients: int = 4  # live viewers at once; more get 503 (each holds a server thread)
    jpeg_quality: int = 75
    threads: int = 8  # server threads: live viewers + page requests
    plot_minutes: float = 5.0  # the score plot covers this many minutes
    alarms_shown: int = 20  # newest alarms listed, with evidence thumbnails
    health_max_age_s: float = 5.0  # /healthz is 200 while the newest frame is younger than this
    max_connections: int = 32  # open connections at most; at the limit a new one replaces the oldest without a request
    idle_timeout_s: float = 5.0  # a connection without a request this long is closed (whole seconds, at least 1)

    def validate(self) -> None:
        check(bool(self.host), "host", "must be an address to bind, e.g. 127.0.0.1")
        check(0 <= self.port <= 65535, "port", f"must be a TCP port in 0..65535 (0: any free one), got {self.port!r}")
        check(not (self.token_env and self.token_file), "token_file", "cannot be combined with web.token_env")
        check(not self.protect_read or bool(self.token_env or self.token_file), "protect_read",
              "needs a token: set web.token_file or web.token_env")
        _positive(self, "live_fps", "live_width", "live_clients", "threads", "plot_minutes", "alarms_shown",
                  "health_max_age_s", "idle_timeout_s")
        check(self.max_connections > self.live_clients, "max_connections",
              f"must be > web.live_clients ({self.live_clients}): live viewers hold connections, got "
              f"{self.max_connections!r}")
        check(self.threads > self.live_clients, "threads",
              f"must be > web.live_clients ({self.live_clients}): each live viewer holds a thread, got {self.threads!r}")
        check(1 <= self.jpeg_quality <= 100, "jpeg_quality", f"must be in 1..100, got {self.jpeg_quality!r}")


@dataclass
class StationConfig:
    """One inspection station: one camera, one part bundle, its alarms."""

    station: str = "station1"
    part: str = ""
    parts_dir: str = "/var/lib/edge_ad/parts"
    bundle: str = ""  # empty: <parts_dir>/<part>/current
    runtime: str = "auto"  # auto: the bundle's TensorRT engine when TensorRT loads here, else ONNX | onnxruntime | tensorrt
    threshold: Union[float, None] = None  # None: the bundle's calibrated threshold
    log_level: str = "INFO"
    roi: Union[list[int], None] = None  # [x, y, width, height] of the frame to inspect; None: whole frame
    frame_log: str = "/var/log/edge_ad/frames.jsonl"  # one JSON line per frame; empty: off
    frame_log_max_mb: float = 256.0  # MiB; beyond this the log is renamed to <frame_log>.1 (replacing it)
    allow_not_ready: bool = False  # run a bundle whose calibration says it is not ready (else: a fault)
    preview: bool = False  # show a window with the heatmap (needs a display and a GUI build of OpenCV)
    camera: CameraConfig = field(default_factory=CameraConfig)
    debounce: DebounceConfig = field(default_factory=DebounceConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    web: WebConfig = field(default_factory=WebConfig)

    def bundle_dir(self) -> Path:
        """The part bundle this station runs."""
        return Path(self.bundle) if self.bundle else Path(self.parts_dir) / self.part / "current"

    def validate(self) -> None:
        check_choice(self.runtime, "runtime", RUNTIMES)
        check_choice(self.log_level, "log_level", ("DEBUG", "INFO", "WARNING", "ERROR"))
        check(bool(self.station) and not any(c in self.station for c in "+#/"), "station",
              f"must be non-empty without '/', '+' or '#', got {self.station!r}")
        check(not any(c in self.part for c in "/+#"), "part", f"must not contain '/', '+' or '#', got {self.part!r}")
        if self.roi is not None:
            check(len(self.roi) == 4 and self.roi[2] > 0 and self.roi[3] > 0 and min(self.roi[:2]) >= 0, "roi",
                  f"must be [x, y, width, height] with x, y >= 0 and width, height > 0, got {self.roi!r}")
        _positive(self, "frame_log_max_mb")
        if self.threshold is not None:
            check(math.isfinite(self.threshold) and self.threshold > 0, "threshold",
                  f"must be a finite number > 0 (or null: the bundle's), got {self.threshold!r}")


def load_station_config(path: str | Path) -> StationConfig:
    """Read a station YAML file; every key is checked against the dataclasses above."""
    raw, where = read_yaml(path, what="station config")
    return build(StationConfig, raw, where)


def station_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> StationConfig:
    """Build and validate a StationConfig from plain data (YAML already parsed)."""
    return build(StationConfig, data, source)
