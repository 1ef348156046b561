"""What every request handler shares: the station's config, status and stop flag, the token, the live encoder."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_ad.station.config import StationConfig
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from edge_ad.station.web.auth import load_token
from edge_ad.station.web.live import LiveEncoder


@dataclass
class WebContext:
    cfg: StationConfig
    status: StationStatus
    stop: StopFlag
    token: str | None  # None: state changes are off
    live: LiveEncoder
    closing: threading.Event = field(default_factory=threading.Event)
    viewers: threading.BoundedSemaphore | None = None
    triggers: Any = None  # triggered mode's TriggerQueue (POST /api/trigger); None in continuous mode

    @classmethod
    def create(cls, cfg: StationConfig, status: StationStatus, stop: StopFlag, triggers: Any = None) -> WebContext:
        web = cfg.web
        live = LiveEncoder(status, web.live_fps, web.live_width, web.jpeg_quality)
        return cls(cfg, status, stop, load_token(web), live, viewers=threading.BoundedSemaphore(web.live_clients),
                   triggers=triggers)

    def bundle(self) -> Path:
        """The bundle the loop runs (as it reported it), else the one the config names."""
        return Path(self.status.bundle) if self.status.bundle else self.cfg.bundle_dir()

    def versioned(self) -> bool:
        """Versions, threshold changes and rollback need parts_dir/<part>/current, not a fixed `bundle:` folder."""
        return not self.cfg.bundle and bool(self.cfg.part)
