"""The fleet's MQTT topics and messages, defined once: what a station reports, what the controller publishes.

`<prefix>/<station>/fleet`        retained, from the station: state, fault, part, version, fps, counts, update state
`<prefix>/fleet/notify`           from the controller: the repository changed, look now (stations only read it)
`<prefix>/fleet/rollout/<part>`   retained, from the controller: the rollout's progress, group by group
A station writes only below `<prefix>/<station>/` (plant/mosquitto/acl); a station may not be called `fleet`.
"""

from __future__ import annotations

import json
import time

FLEET = "fleet"


def status_topic(prefix: str, station: str) -> str:
    return f"{prefix}/{station}/{FLEET}"


def all_status_topics(prefix: str) -> str:
    return f"{prefix}/+/{FLEET}"


def notify_topic(prefix: str) -> str:
    return f"{prefix}/{FLEET}/notify"


def rollout_topic(prefix: str, part: str) -> str:
    return f"{prefix}/{FLEET}/rollout/{part}"


def all_rollout_topics(prefix: str) -> str:
    return f"{prefix}/{FLEET}/rollout/+"


def offline(station: str) -> str:
    """The last will: the broker says it when the station's connection dies."""
    return json.dumps({"station": station, "state": "offline", "online": False, "time": time.time()})


def decode(payload: bytes) -> dict | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def alarm_rate(counts: dict | None) -> float | None:
    """Anomalous frames per inspected frame over a period ({frames, anomalous}), None before any frame."""
    if not counts or not counts.get("frames"):
        return None
    return counts.get("anomalous", 0) / counts["frames"]
