"""Alarm outputs fed by one debouncer: log (always), MQTT and GPIO (from the station config).

Loop usage::

    alarms = build_alarms(cfg)
    decision = alarms.update(result.is_anomaly)
    if decision.rising:
        alarms.fire(AlarmEvent(station=..., part=..., model_version=..., score=..., ...))
    ...
    alarms.close()   # GPIO driven inactive, MQTT marked offline
"""

from __future__ import annotations

from edge_ad.station.alarms.base import AlarmEvent, Alarms, Sink
from edge_ad.station.alarms.debounce import Debouncer, Decision
from edge_ad.station.alarms.log import LogSink
from edge_ad.station.config import StationConfig

__all__ = ["AlarmEvent", "Alarms", "Debouncer", "Decision", "LogSink", "Sink", "build_alarms"]


def build_alarms(cfg: StationConfig) -> Alarms:
    """Every sink the station config enables, behind one debouncer. Hardware/broker modules load lazily."""
    sinks: list[Sink] = [LogSink()]
    if cfg.mqtt.enabled:
        from edge_ad.station.alarms.mqtt import MqttSink

        sinks.append(MqttSink(cfg.mqtt, cfg.station, cfg.part))
    if cfg.gpio.enabled:
        from edge_ad.station.alarms.gpio import GpioFaultSink, GpioSink

        try:
            sinks.append(GpioSink(cfg.gpio))
            if cfg.gpio.fault_pin >= 0:
                sinks.append(GpioFaultSink(cfg.gpio))
        except Exception:
            for sink in sinks:
                sink.close()
            raise
    d = cfg.debounce
    return Alarms(sinks, Debouncer(d.window, d.min_anomalous, d.hold_s))
