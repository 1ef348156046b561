"""The station's web view: live frame with heatmap, status, alarms with evidence, score plot, part versions,
threshold and rollback, /healthz and Prometheus /metrics, served by the station process in its own threads.

Flask and waitress (the `web` extra) are imported only when `web.enabled`, so a station without them runs;
a web view that cannot start is logged and left off, never a reason to stop inspecting.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge_ad.errors import EdgeAdError
from edge_ad.station.config import StationConfig
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus

log = logging.getLogger(__name__)


class WebHandle(Protocol):
    url: str

    def close(self) -> None: ...


class _Off:
    """What start_web returns when there is no web view: close() does nothing."""

    url = ""

    def close(self) -> None:
        pass


def start_web(cfg: StationConfig, status: StationStatus, stop: StopFlag, triggers: Any = None) -> WebHandle:
    """Serve the web view in background threads when `web.enabled`; call close() on the result when stopping.
    `triggers` (triggered mode's TriggerQueue) takes POST /api/trigger."""
    if not cfg.web.enabled:
        return _Off()
    try:
        from edge_ad.station.web.server import WebServer

        return WebServer(cfg, status, stop, triggers).start()
    except ImportError as e:
        log.error("web view off: %s is not installed (pip install 'edge_ad[web]')", e.name or e)
    except (EdgeAdError, OSError) as e:
        log.error("web view off: %s", e)
    return _Off()
