"""Log sink: always on, so every alarm is in the journal even when MQTT and GPIO are off."""

from __future__ import annotations

import logging

from edge_ad.station.alarms.base import AlarmEvent

log = logging.getLogger("edge_ad.alarm")


class LogSink:
    name = "log"

    def on_event(self, event: AlarmEvent) -> None:
        log.warning(
            "ANOMALY station=%s part=%s model=%s score=%.4f threshold=%.4f boxes=%d evidence=%s",
            event.station, event.part, event.model_version, event.score, event.threshold,
            len(event.boxes), event.evidence or "-",
        )

    def set_active(self, active: bool) -> None:
        log.info("alarm %s", "on" if active else "cleared")

    def close(self) -> None:
        pass
