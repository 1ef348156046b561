"""Plant settings (the publishing machine's and the rollout's) as dataclasses loaded from one YAML file, plant.yaml.

A station's own fleet settings (which repository, which group, how often to poll) are the `fleet:` section of its
station.yaml (edge_ad.station.config.FleetConfig). Every default lives here, once, with its help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.config import build, check, read_yaml
from edge_ad.station.config import MqttConfig


@dataclass
class ExpiryConfig:
    """How long each signed metadata file is valid: a station refuses expired metadata (a frozen repository)."""

    root_days: float = 365.0  # re-sign root with the off-line key before this (edge_ad fleet rotate-key)
    targets_days: float = 90.0  # re-signed on every publish, rollout step and `edge_ad fleet resign`
    snapshot_days: float = 7.0
    timestamp_days: float = 1.0  # the freshness window: run `edge_ad fleet resign` daily (cron / systemd timer)

    def validate(self) -> None:
        for key in ("root_days", "targets_days", "snapshot_days", "timestamp_days"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)!r}")


@dataclass
class RolloutConfig:
    """A staged rollout (hawkBit's rollout groups): group by group, each one soaked before the next starts."""

    groups: list[str] = field(default_factory=lambda: ["canary"])  # in order; stations of no listed group go last
    soak_s: float = 300.0  # a group must run the new version without fault this long before the next one starts
    alarm_factor: float = 2.0  # the new version's alarm rate (anomalous frames / frames) may be at most this x the old
    alarm_rate_floor: float = 0.02  # ... or this rate, when the old one was lower (an old rate of 0 allows this much)
    min_frames: int = 100  # frames a group inspects on the new version before its alarm rate is judged
    error_threshold: float = 0.0  # fraction of a group's stations that may fail (refuse, fault, go offline) and go on
    station_timeout_s: float = 600.0  # a station that does not run the new version this long after the step failed
    poll_s: float = 0.5  # how often the controller re-reads the stations' status while it waits

    def validate(self) -> None:
        check(bool(self.groups) and all(isinstance(g, str) and g and "/" not in g for g in self.groups), "groups",
              f"must be a non-empty list of group names, got {self.groups!r}")
        check(len(set(self.groups)) == len(self.groups), "groups", f"lists a group twice: {self.groups!r}")
        check(self.alarm_factor >= 1.0, "alarm_factor", f"must be >= 1, got {self.alarm_factor!r}")
        check(0.0 <= self.error_threshold < 1.0, "error_threshold", f"must be in [0, 1), got {self.error_threshold!r}")
        for key in ("soak_s", "alarm_rate_floor", "min_frames"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)!r}")
        for key in ("station_timeout_s", "poll_s"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)!r}")


@dataclass
class PlantConfig:
    """The publishing machine: where bundles go, which keys sign them, which broker the stations report to."""

    repository: str = ""  # s3://bucket/prefix (boto3, any S3-compatible store) or a folder a web server serves
    s3_endpoint: str = ""  # S3-compatible server URL (MinIO, rclone serve s3); empty: AWS (or AWS_ENDPOINT_URL_S3)
    keys_dir: str = "/etc/edge_ad/repo_keys"  # online keys: targets.pem, snapshot.pem, timestamp.pem (mode 600)
    root_key: str = ""  # the off-line root key (e.g. /media/usb/root.pem): init, rotate-key only
    parts_dir: str = "parts"  # bundles to publish from (what `edge_ad calibrate` wrote)
    broker: MqttConfig = field(default_factory=MqttConfig)  # the central broker (status, rollout progress, notify)
    expiry: ExpiryConfig = field(default_factory=ExpiryConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def validate(self) -> None:
        pass


def load_plant_config(path: str | Path | None, overrides: dict | None = None) -> PlantConfig:
    """plant.yaml (or the defaults when None) with dotted overrides; every key checked against the dataclasses."""
    raw, where = read_yaml(path, overrides, what="plant config")
    return build(PlantConfig, raw, where)
