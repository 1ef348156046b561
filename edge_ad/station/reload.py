"""SIGHUP re-reads the station config: what can change in a running station changes, the rest waits for a restart.

The bundle (part's parts_dir, bundle, runtime, threshold, allow_not_ready), the roi, the debounce, the fault
settings and the log level apply at once. The camera, the alarm outputs, the evidence store, the frame log, the web
view and the station and part names (they name the MQTT topics) are built once at start: a change to them is
logged as needing a restart and the running values stay. A config that no longer loads is logged and ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from edge_ad.errors import EdgeAdError
from edge_ad.station.config import StationConfig

log = logging.getLogger(__name__)

LIVE_KEYS = ("parts_dir", "bundle", "runtime", "threshold", "allow_not_ready", "roi", "debounce", "fault", "log_level")


def reread(running: StationConfig, load: Callable[[], StationConfig]) -> StationConfig:
    """The config to run after a SIGHUP: `load()`'s values for LIVE_KEYS, the running ones for the rest."""
    try:
        new = load()
    except EdgeAdError as e:
        log.error("reload: the station config does not load (%s); keeping the running one", e)
        return running
    restart = [f.name for f in dataclasses.fields(StationConfig)
               if f.name not in LIVE_KEYS and getattr(new, f.name) != getattr(running, f.name)]
    if restart:
        log.warning("reload: changes to %s need a restart (systemctl restart edge_ad); running with the old values "
                    "of those", ", ".join(restart))
    changed = [k for k in LIVE_KEYS if getattr(new, k) != getattr(running, k)]
    if changed:
        log.info("reload: applying %s from the station config", ", ".join(changed))
    return dataclasses.replace(running, **{k: getattr(new, k) for k in LIVE_KEYS})
