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

    source: str = "csi://0"  # file, folder, 0 or /dev/video0, rtsp://..., csi://N, gst://<pipeline>
    width: int = 1920  # requested from V4L2 / CSI; files and streams keep their own size
    height: int = 1080  # requested from V4L2 / CSI, like width
    fps: float = 30.0  # requested from V4L2 / CSI; pace of a folder source in realtime mode
    flip: int = 0  # nvvidconv flip-method for CSI (0 none, 2 rotate 180)
    fourcc: str = ""  # V4L2 pixel format to request, e.g. MJPG (USB cameras need it for 1080p at 30 fps)
    rtsp_tcp: bool = True  # RTSP over TCP: no smeared frames from lost UDP packets
    csi_pipeline: str = CSI_PIPELINE  # GStreamer template of csi:// (jetson/pipelines/csi.txt)
    file_mode: str = "every"  # files/folders: every (no drops, in order) | realtime (paced, drops) | latest
    live: bool = False  # replay a file/folder like a camera: paced at its fps, reopened at the end or on failure
    reconnect_min_s: float = 0.5  # first backoff delay after a live source fails twice in a row
    reconnect_max_s: float = 30.0  # the backoff doubles up to this
    open_timeout_s: float = 10.0  # network streams (RTSP/HTTP) only
    read_timeout_s: float = 5.0  # a read that takes longer counts as a failed read

    def validate(self) -> None:
        check_choice(self.file_mode, "file_mode", FILE_MODES)
        _positive(self, "width", "height", "fps", "open_timeout_s", "read_timeout_s", "reconnect_min_s", "reconnect_max_s")
        check(self.reconnect_max_s >= self.reconnect_min_s, "reconnect_max_s",
              f"must be >= camera.reconnect_min_s, got {self.reconnect_max_s!r}")


@dataclass
class DebounceConfig:
    """Raise the alarm when `min_anomalous` of the last `window` frames are anomalous; keep it `hold_s`."""

    window: int = 5  # frames looked at
    min_anomalous: int = 3  # anomalous frames among them that raise the alarm
    hold_s: float = 2.0  # keep the alarm on this long after that stops being true

    def validate(self) -> None:
        _positive(self, "window", "min_anomalous")
        _non_negative(self, "hold_s")
        check(self.min_anomalous <= self.window, "min_anomalous",
              f"must be <= debounce.window ({self.window}), got {self.min_anomalous!r}")


@dataclass
class MqttConfig:
    """MQTT alarm sink; events go through an on-disk queue so a broker outage loses nothing."""

    enabled: bool = False  # send alarm events and the retained status to the broker
    host: str = "localhost"  # broker address
    port: int = 1883  # broker port (8883 is usual with tls)
    client_id: str = ""  # empty: edge_ad-<station>-<part>
    topic_prefix: str = "edge_ad"  # topics: <prefix>/<station>/<part>/event and .../status
    qos: int = 1  # 0 | 1 | 2 (events are at-least-once from the disk queue with 1 or 2)
    keepalive_s: int = 30  # MQTT keep-alive; the broker publishes the last will after 1.5 x this without a word
    username: str = ""  # empty: no authentication
    password_env: str = ""  # name of an environment variable holding the password
    password_file: str = ""  # or a file holding it (first line); the password is never logged
    tls: bool = False  # TLS to the broker (with ca_file, or the system CA store)
    ca_file: str = ""  # empty with tls: the system CA store
    cert_file: str = ""  # client certificate (mutual TLS), optional
    key_file: str = ""  # the client certificate's private key
    tls_insecure: bool = False  # skip host name check (test benches only)
    reconnect_min_s: float = 1.0  # first wait before reconnecting to the broker
    reconnect_max_s: float = 60.0  # the wait doubles up to this
    queue_dir: str = "/var/lib/edge_ad/mqtt_queue"  # events not yet acknowledged by the broker, one file each
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

    enabled: bool = False  # drive the alarm (and fault) output
    backend: str = "none"  # jetson (Jetson.GPIO) | gpiod (libgpiod) | none | fake (records, for tests)
    pin: int = 7  # Jetson.GPIO: number in `numbering`; gpiod: line offset on `chip`
    numbering: str = "BOARD"  # Jetson.GPIO pin numbering: BOARD | BCM | CVM | TEGRA_SOC
    chip: str = "/dev/gpiochip0"  # gpiod only
    active_high: bool = True  # the alarm output is high when active
    mode: str = "hold"  # hold (level follows the alarm) | pulse (pulse_s per event)
    pulse_s: float = 0.5  # pulse length in mode pulse
    fault_pin: int = -1  # a second output, active while the station cannot inspect (same backend); -1: none
    fault_active_high: bool = True  # the fault output is high when active
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

    enabled: bool = True  # save evidence for each alarm
    dir: str = "/var/lib/edge_ad/evidence"  # one folder per alarm event
    max_mb: float = 2048.0  # MiB; oldest events are deleted beyond this
    max_events: int = 0  # 0: no count limit
    jpeg_quality: int = 90  # evidence JPEGs (1-100)
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

    status_interval_s: float = 5.0  # seconds between systemd STATUS= updates

    def validate(self) -> None:
        _positive(self, "status_interval_s")


@dataclass
class WebConfig:
    """The station's web view and Prometheus /metrics, served by the station process (off by default)."""

    enabled: bool = False  # serve the web view (or: edge_ad run --web 127.0.0.1:8080)
    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 (every interface) only with a token
    port: int = 8080  # 0: a free port, named in the start-up log line
    token_env: str = ""  # name of an environment variable holding the token for state changes
    token_file: str = ""  # or a file holding it (first line); never logged. Neither: state changes are off
    protect_read: bool = False  # pages, live view and /metrics need the token too (a log-in form sets a cookie)
    live_fps: float = 4.0  # most JPEGs per second the live view encodes (in the web thread, never in the loop)
    live_width: int = 640  # px; the live frame is shrunk to this width before encoding
    live_clients: int = 4  # live viewers at once; more get 503 (each holds a server thread)
    jpeg_quality: int = 75  # live view JPEGs (1-100)
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


TRIGGER_EDGES = ("rising", "falling")
OPCUA_SECURITY = ("none", "sign", "sign_encrypt")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _opt(default: Any, help: str) -> Any:
    """A setting with its help text (field metadata): declared once, shown by `config show` and the docs."""
    return field(default=default, metadata={"help": help})


@dataclass
class TriggerConfig:
    """Triggered mode: a trigger in, exactly one result for that part out (ok, nok or error), instead of judging every
    frame; the continuous mode (debounce, alarms) is off while it is on."""

    enabled: bool = _opt(False, "inspect one part per trigger instead of every frame")
    delay_s: float = _opt(0.0, "inspect the first frame captured at or after the trigger time plus this")
    frames: int = _opt(1, "best of N: the sharpest of the first N frames from that time is inspected")
    frame_timeout_s: float = _opt(0.25, "a frame not captured this long after trigger + delay makes the result `error`")
    history: int = _opt(64, "frames the camera keeps with their capture time (covers the triggers waiting)")
    queue_max: int = _opt(256, "triggers waiting for inspection at most; one more is answered `error` at once")
    part_id_prefix: str = _opt("", "parts without an id from the trigger are named <prefix><counter>")
    gpio_pin: int = _opt(-1, "input line of a light barrier or PLC output (gpio.backend, chip, numbering); -1: off")
    gpio_edge: str = _opt("rising", "the edge that is a trigger: rising | falling")
    gpio_debounce_s: float = _opt(0.005, "edges closer than this to the last accepted one are contact bounce")
    mqtt: bool = _opt(True, "accept triggers on <mqtt.topic_prefix>/<station>/<part>/trigger (needs mqtt.enabled)")
    http: bool = _opt(True, "accept POST /api/trigger with the web token (needs web.enabled and a token)")
    timer_s: float = _opt(0.0, "a trigger every this many seconds (bench tests, soak runs); 0: off")

    def validate(self) -> None:
        check_choice(self.gpio_edge, "gpio_edge", TRIGGER_EDGES)
        _positive(self, "frames", "frame_timeout_s", "history", "queue_max")
        _non_negative(self, "delay_s", "gpio_debounce_s", "timer_s")
        check(self.gpio_pin >= -1, "gpio_pin", f"must be -1 (off) or a line number, got {self.gpio_pin!r}")
        check(self.frames <= self.history, "frames", f"must be <= trigger.history ({self.history}), got {self.frames!r}")


@dataclass
class RejectConfig:
    """A reject output (a GPIO pulse to a pusher or air jet) that fires when a NOK part reaches the rejector: a fixed
    time or an encoder distance after its trigger, in part order, with several parts on the way."""

    enabled: bool = _opt(False, "pulse the reject line for NOK parts (triggered mode)")
    pin: int = _opt(-1, "output line of the rejector (gpio.backend, chip, numbering)")
    active_high: bool = _opt(True, "the rejector fires on a high level")
    pulse_s: float = _opt(0.1, "how long the reject line stays active per part")
    delay_s: float = _opt(0.5, "from the trigger to the part at the rejector (conveyor length / speed)")
    encoder_pin: int = _opt(-1, "an encoder input: count its pulses instead of time; -1: timed rejects")
    distance_counts: int = _opt(0, "encoder pulses from the trigger to the rejector (with encoder_pin)")
    on_error: bool = _opt(True, "reject parts whose result is `error` too (fail-safe: nothing unjudged passes)")
    max_in_flight: int = _opt(256, "parts between camera and rejector at most")

    def validate(self) -> None:
        _positive(self, "pulse_s", "max_in_flight")
        _non_negative(self, "delay_s", "distance_counts")
        check(not self.enabled or self.pin >= 0, "pin", f"must be the reject output line when enabled, got {self.pin!r}")
        check(self.encoder_pin < 0 or self.distance_counts > 0, "distance_counts",
              f"must be > 0 with reject.encoder_pin, got {self.distance_counts!r}")
        check(self.encoder_pin < 0 or self.encoder_pin != self.pin, "encoder_pin", "must differ from reject.pin")


@dataclass
class OpcuaConfig:
    """An OPC UA server in the station process (asyncua) for the PLC: state, part, last result, counters, a trigger
    and a part-version method; OPC 40100 (machine vision) names where they fit (README: OPC UA)."""

    enabled: bool = _opt(False, "serve OPC UA (pip install 'edge_ad[opcua]')")
    host: str = _opt("127.0.0.1", "address to bind; another than loopback needs a user or certificate security")
    port: int = _opt(4840, "TCP port (0: a free one, named in the start-up log line)")
    namespace: str = _opt("urn:edge-ad:station", "namespace URI of the station's nodes (ns=2 in node ids)")
    security: str = _opt("none", "none | sign | sign_encrypt (Basic256Sha256; needs cert_file and key_file)")
    cert_file: str = _opt("", "server certificate (DER or PEM) for sign / sign_encrypt")
    key_file: str = _opt("", "its private key (PEM)")
    client_certs: list[str] = field(default_factory=list, metadata={
        "help": "client certificates allowed to log in with their certificate (X509 identity)"})
    username: str = _opt("", "a user name to log in with; set with password_env or password_file")
    password_env: str = _opt("", "environment variable holding that user's password")
    password_file: str = _opt("", "or a file holding it (first line); never logged")
    allow_anonymous: bool = _opt(True, "anonymous sessions (read and call methods) while no username or client_certs "
                                       "is set; with one, a log-in is the only way in")

    def validate(self) -> None:
        check_choice(self.security, "security", OPCUA_SECURITY)
        check(0 <= self.port <= 65535, "port", f"must be a TCP port in 0..65535, got {self.port!r}")
        check(not (self.password_env and self.password_file), "password_file", "cannot be combined with "
              "opcua.password_env")
        check(not self.username or bool(self.password_env or self.password_file), "username",
              "needs opcua.password_env or opcua.password_file")
        check(self.security == "none" or bool(self.cert_file and self.key_file), "security",
              f"{self.security} needs opcua.cert_file and opcua.key_file")
        check(not self.client_certs or self.security != "none", "client_certs",
              "certificate log-in needs opcua.security sign or sign_encrypt")
        secured = bool(self.username or self.client_certs)
        check(self.host in LOOPBACK_HOSTS or secured, "host", f"{self.host} is reachable from the network: set "
              "opcua.username or opcua.client_certs (or bind 127.0.0.1)")
        check(secured or self.allow_anonymous, "allow_anonymous", "false without opcua.username or "
              "opcua.client_certs leaves no way to log in")


@dataclass
class FleetConfig:
    """Bundles from the plant's repository (edge_ad.fleet): poll it (or hear over MQTT that there is something new),
    fetch and verify with TUF, stage, switch `current`, reload; what does not verify is refused and reported."""

    enabled: bool = False  # follow the desired state the plant's repository signs for this station
    repository: str = ""  # s3://bucket/prefix or http(s)://host/path (read-only for stations), or a folder
    s3_endpoint: str = ""  # S3-compatible server URL; empty: AWS. Credentials: AWS_* variables, a read-only key
    trusted_root: str = "/etc/edge_ad/fleet_root.json"  # the repository's 1.root.json, copied here at install
    cache_dir: str = "/var/lib/edge_ad/fleet"  # verified metadata (what was seen: no rollback) and downloads
    group: str = ""  # the rollout group this station belongs to (e.g. canary); empty: the last, default group
    poll_s: float = 300.0  # look at the repository this often; an MQTT notify looks at once
    retry_s: float = 30.0  # after a look that failed or was refused (store unreachable, expired metadata), this soon
    report_s: float = 10.0  # publish the retained fleet status (state, version, fps, counts) this often
    switch_timeout_s: float = 60.0  # a new version must be running this long after the switch, else it goes back

    def validate(self) -> None:
        _positive(self, "poll_s", "retry_s", "report_s", "switch_timeout_s")
        check(not self.enabled or bool(self.repository), "repository", "must be set when fleet.enabled")
        check("/" not in self.group and not any(c in self.group for c in "+#"), "group",
              f"must be a name without '/', '+' or '#', got {self.group!r}")


@dataclass
class StationConfig:
    """One inspection station: one camera, one part bundle, its alarms."""

    station: str = "station1"  # this station's name; MQTT topics are <mqtt.topic_prefix>/<station>/<part>/...
    part: str = ""  # the part inspected: its bundle is <parts_dir>/<part>/current
    parts_dir: str = "/var/lib/edge_ad/parts"  # where calibrate's part bundles live
    bundle: str = ""  # empty: <parts_dir>/<part>/current
    runtime: str = "auto"  # auto: the bundle's TensorRT engine when TensorRT loads here, else ONNX | onnxruntime | tensorrt
    threshold: Union[float, None] = None  # None: the bundle's calibrated threshold
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR
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
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    reject: RejectConfig = field(default_factory=RejectConfig)
    opcua: OpcuaConfig = field(default_factory=OpcuaConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

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
        t = self.trigger
        lines = [(k, v) for k, v, on in (
            ("gpio.pin", self.gpio.pin, self.gpio.enabled), ("gpio.fault_pin", self.gpio.fault_pin, self.gpio.enabled),
            ("trigger.gpio_pin", t.gpio_pin, t.enabled), ("reject.pin", self.reject.pin, self.reject.enabled),
            ("reject.encoder_pin", self.reject.encoder_pin, self.reject.enabled)) if on and v >= 0]
        for i, (key, pin) in enumerate(lines):
            other = next((k for k, v in lines[:i] if v == pin), None)
            check(other is None, key, f"line {pin} is already {other}")
        check(not (t.enabled and self.reject.enabled and self.reject.encoder_pin < 0)
              or t.delay_s + t.frame_timeout_s < self.reject.delay_s, "reject.delay_s",
              f"must be > trigger.delay_s + trigger.frame_timeout_s ({t.delay_s + t.frame_timeout_s:g}): a part without "
              f"a frame would reach the rejector before its result, got {self.reject.delay_s!r}")
        if self.threshold is not None:
            check(math.isfinite(self.threshold) and self.threshold > 0, "threshold",
                  f"must be a finite number > 0 (or null: the bundle's), got {self.threshold!r}")
        check(not self.fleet.enabled or (not self.bundle and bool(self.part)), "fleet.enabled",
              "needs `part` set and `bundle` empty: the fleet switches <parts_dir>/<part>/current")


def load_station_config(path: str | Path) -> StationConfig:
    """Read a station YAML file; every key is checked against the dataclasses above."""
    raw, where = read_yaml(path, what="station config")
    return build(StationConfig, raw, where)


def station_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> StationConfig:
    """Build and validate a StationConfig from plain data (YAML already parsed)."""
    return build(StationConfig, data, source)
