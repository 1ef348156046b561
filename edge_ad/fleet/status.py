"""Every station and rollout in one place: the retained fleet messages on the central broker, kept up to date, and
the table `edge_ad fleet status` prints."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

from edge_ad.fleet import mqtt as M
from edge_ad.fleet import protocol as P
from edge_ad.station.config import MqttConfig

SYNC_WAIT_S = 10.0  # how long a one-shot reader waits for the broker to hand over the retained messages


class FleetView:
    """The newest retained status of every station and every rollout (a live subscription to the broker)."""

    def __init__(self, broker: MqttConfig, client_id: str = "", wait_s: float = SYNC_WAIT_S) -> None:
        self.prefix, self.wait_s = broker.topic_prefix, wait_s
        self._mark = 0
        self._lock = threading.Lock()
        self._stations: dict[str, dict] = {}
        self._rollouts: dict[str, dict] = {}
        self._synced = threading.Event()
        self._sync_topic = f"{P.notify_topic(self.prefix)}/sync/{uuid.uuid4().hex[:12]}"
        client_id = client_id or f"edge_ad-fleet-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.client = M.connect(broker, client_id, (P.all_status_topics(self.prefix), P.all_rollout_topics(self.prefix),
                                                    self._sync_topic), self._on_message, wait_s=wait_s)
        self.client.publish(self._sync_topic, b"sync", qos=1)  # comes back after the retained messages before it
        self._synced.wait(wait_s)

    def _on_message(self, topic: str, payload: bytes, _retained: bool) -> None:
        if topic == self._sync_topic:
            self._synced.set()
            return
        doc = P.decode(payload) if payload else None
        bits = topic.split("/")
        with self._lock:
            if topic.startswith(P.rollout_topic(self.prefix, "")):
                key, table = bits[-1], self._rollouts
            else:
                key, table = bits[-2], self._stations
            if doc is None:
                table.pop(key, None)  # an empty retained message clears it
            else:
                doc["received"] = time.time()
                table[key] = doc

    def stations(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._stations.items()}

    def rollouts(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._rollouts.items()}

    def publish_rollout(self, part: str, doc: dict) -> None:
        """The rollout's retained record, back from the broker before this returns (this view subscribes to it), so
        a command that ends next does not take its last word with it."""
        self._mark += 1
        mark = f"{id(self)}-{self._mark}"
        self.client.publish(P.rollout_topic(self.prefix, part), json.dumps({**doc, "mark": mark}), qos=1, retain=True)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and self.rollouts().get(part, {}).get("mark") != mark:
            time.sleep(0.01)

    def notify(self, doc: dict | None = None) -> None:
        """Tell every station to look at the repository now (they also poll)."""
        self._sent(self.client.publish(P.notify_topic(self.prefix), json.dumps(doc or {"time": time.time()}), qos=1))

    def _sent(self, info) -> None:
        try:
            info.wait_for_publish(timeout=self.wait_s)
        except (RuntimeError, ValueError):  # not connected: paho sends it on reconnect
            pass

    def close(self) -> None:
        M.close(self.client)


def station_line(name: str, d: dict) -> dict[str, Any]:
    """One station as the table and the fleet page show it."""
    upd = d.get("update") or {}
    rate = P.alarm_rate(d.get("on_version"))
    return {"station": name, "group": d.get("group") or "-", "part": d.get("part") or "-",
            "version": d.get("version") or "-", "desired": f"v{d['desired']}" if d.get("desired") else "-",
            "state": d.get("state") or "?", "fps": f"{d['fps']:.1f}" if isinstance(d.get("fps"), (int, float)) else "-",
            "frames": d.get("frames", 0), "alarms": d.get("alarms", 0),
            "alarm_rate": f"{rate:.3f}" if rate is not None else "-",
            "update": upd.get("state", "-"), "why": d.get("fault") or upd.get("reason") or ""}


COLUMNS = ("station", "group", "part", "version", "desired", "state", "fps", "frames", "alarms", "alarm_rate",
           "update", "why")


def format_table(stations: dict[str, dict], rollouts: dict[str, dict]) -> str:
    """Plain text: one line per station, then each rollout's groups."""
    rows = [station_line(n, d) for n, d in sorted(stations.items())]
    if not rows:
        lines = ["no station has reported to this broker (fleet.enabled and mqtt.enabled in station.yaml?)"]
    else:
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS[:-1]}
        lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS[:-1]) + "  why"]
        lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS[:-1]) + "  " + r["why"] for r in rows]
    for part, ro in sorted(rollouts.items()):
        lines.append(f"rollout {part}: v{ro.get('from')} -> v{ro.get('to')}: {ro.get('state')}"
                     + (f" ({ro['reason']})" if ro.get("reason") else ""))
        for g in ro.get("groups", []):
            lines.append(f"  {g['name']:<12} {g['state']:<12} {len(g.get('stations', []))} station(s)"
                         + (f"  {g['reason']}" if g.get("reason") else ""))
    return "\n".join(lines)
