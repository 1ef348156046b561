"""Desired state: which version of each part every station should run, as one signed TUF target (fleet/desired.json).

{"parts": {"flange": {"version": 3, "groups": {"canary": 4}, "stations": {"line2-cam1": 3}}}, "serial": 7}
A station runs `stations[its name]`, else `groups[its group]`, else `version`. The rollout moves a group at a time by
writing `groups`; when every group runs the new version it becomes `version` and the overrides go.
"""

from __future__ import annotations

import json

from edge_ad.errors import EdgeAdError

DESIRED = "fleet/desired.json"


def empty() -> dict:
    return {"parts": {}, "serial": 0}


def parse(data: bytes) -> dict:
    """The desired-state document, checked (it is signed, but a publisher's bug must not crash a station)."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise EdgeAdError(f"{DESIRED}: not JSON ({e})") from None
    parts = doc.get("parts") if isinstance(doc, dict) else None
    if not isinstance(parts, dict) or not all(isinstance(v, dict) for v in parts.values()):
        raise EdgeAdError(f"{DESIRED}: expected {{'parts': {{PART: {{'version': N, ...}}}}}}")
    return doc


def version_for(doc: dict, part: str, station: str, group: str) -> int | None:
    """The version this station should run (None: the repository says nothing about this part)."""
    p = doc.get("parts", {}).get(part)
    if not p:
        return None
    for v in (p.get("stations", {}).get(station), p.get("groups", {}).get(group) if group else None, p.get("version")):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def set_version(doc: dict, part: str, version: int, group: str | None = None, station: str | None = None) -> dict:
    """A copy of doc with one assignment changed: the part's default, one group's or one station's version."""
    out = json.loads(json.dumps(doc))
    p = out.setdefault("parts", {}).setdefault(part, {})
    if station:
        p.setdefault("stations", {})[station] = version
    elif group:
        p.setdefault("groups", {})[group] = version
    else:
        p["version"] = version
        p.pop("groups", None)
        p.pop("stations", None)
    out["serial"] = int(out.get("serial", 0)) + 1
    return out


def clear_group(doc: dict, part: str, group: str) -> dict:
    """A copy of doc where `group` follows the part's default version again."""
    out = json.loads(json.dumps(doc))
    out.get("parts", {}).get(part, {}).get("groups", {}).pop(group, None)
    out["serial"] = int(out.get("serial", 0)) + 1
    return out
