"""Prometheus /metrics: a collector on its own registry that reads StationStatus at scrape time, so the loop does
no work for it. Counters are since the process started; latency is a cumulative histogram in seconds."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from edge_ad.station.status import STATES, VERDICTS, StationStatus

COUNTERS = (  # (StationStatus field, metric name without _total, help)
    ("frames", "edge_ad_frames", "Frames inspected."),
    ("anomalous", "edge_ad_anomalous_frames", "Frames whose score reached the threshold."),
    ("alarms", "edge_ad_alarms", "Alarms fired (debounced rising edges)."),
    ("errors", "edge_ad_frame_errors", "Frames that could not be inspected."),
    ("dropped", "edge_ad_dropped_frames", "Camera frames dropped because inspection was busy."),
    ("reconnects", "edge_ad_camera_reconnects", "Camera reconnects."),
    ("reloads", "edge_ad_reloads", "Bundle reloads (SIGHUP, threshold change, rollback)."),
)


class StatusCollector:
    """Turns one StationStatus snapshot into metric families."""

    def __init__(self, status: StationStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status.snapshot()
        names, values = ["station", "part"], [s["station"], s["part"]]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, float("nan") if value is None else float(value))
            return g

        for key, name, doc in COUNTERS:
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(values, s[key])
            yield c
        buckets, total_ms = self.status.latency_histogram()
        h = HistogramMetricFamily("edge_ad_latency_seconds", "Capture to verdict latency per frame.", labels=names)
        h.add_metric(values, [(_le(ms), n) for ms, n in buckets], total_ms / 1e3)
        yield h
        parts = CounterMetricFamily("edge_ad_parts", "Triggered parts by result (exactly one per trigger).",
                                    labels=[*names, "verdict"])
        for verdict in VERDICTS:
            parts.add_metric([*values, verdict], s[f"parts_{verdict}"])
        yield parts
        buckets, total_ms = self.status.part_latency_histogram()
        h = HistogramMetricFamily("edge_ad_trigger_to_result_seconds", "Trigger to result latency per triggered part.",
                                  labels=names)
        h.add_metric(values, [(_le(ms), n) for ms, n in buckets], total_ms / 1e3)
        yield h
        yield gauge("edge_ad_mqtt_queue_depth", "MQTT events waiting in the on-disk queue.", s["queue_depth"])
        yield gauge("edge_ad_fps", "Frames per second over the last frames.", s["fps"])
        yield gauge("edge_ad_threshold", "Alarm threshold of the loaded bundle.", s["threshold"])
        yield gauge("edge_ad_last_score", "Score of the newest frame.", s["last_score"])
        yield gauge("edge_ad_camera_up", "1 while the camera delivers frames.", s["camera"] == "ok")
        yield gauge("edge_ad_broker_connected", "1 while the MQTT broker is connected.", s["broker"] == "connected")
        yield gauge("edge_ad_start_time_seconds", "Unix time the station started.", s["started"])
        info = GaugeMetricFamily("edge_ad_bundle_info", "The loaded part bundle (value 1).",
                                 labels=[*names, "version", "method", "backend"])
        info.add_metric([*values, s["version"], s["method"], s["backend"]], 1.0)
        yield info
        state = GaugeMetricFamily("edge_ad_state", "1 for the station's current state.", labels=[*names, "state"])
        for name in STATES:
            state.add_metric([*values, name], float(s["state"] == name))
        yield state


def _le(ms: float) -> str:
    return "+Inf" if ms == float("inf") else repr(ms / 1e3)


def make_registry(status: StationStatus) -> CollectorRegistry:
    """A registry of our own (not prometheus_client's global one), so two stations in one process never clash."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text format body and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
