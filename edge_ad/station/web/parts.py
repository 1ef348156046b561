"""The current part's versions with their metrics, and the two changes the page can make: a new threshold (a new
bundle version) and a rollback. Both end in StopFlag.request_reload(), the path SIGHUP takes."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
from edge_ad.station.web.context import WebContext

log = logging.getLogger(__name__)

METRICS_SHOWN = ("val_false_alarm_rate", "image_auroc", "f1", "precision", "recall")


@lru_cache(maxsize=64)
def _manifest(path: str, mtime: float) -> dict[str, Any]:
    return B.read_manifest(path)


def manifest(bundle: Path) -> dict[str, Any]:
    """A bundle's manifest.json ({} when unreadable), cached while the file is unchanged."""
    try:
        return _manifest(str(bundle), (bundle / B.MANIFEST).stat().st_mtime)
    except (OSError, ValueError, EdgeAdError):
        return {}


def readiness(ctx: WebContext) -> dict[str, Any] | None:
    """The running bundle's readiness verdict ({"ready": bool, "reason": str}), None when it has none."""
    r = manifest(ctx.bundle()).get("readiness")
    return r if isinstance(r, dict) and "ready" in r else None


def changes_off(ctx: WebContext) -> str:
    """Why threshold changes and rollback are unavailable here ("" when they are available)."""
    if ctx.token is None:
        return "no token configured (web.token_file or web.token_env)"
    if not ctx.versioned():
        return f"this station runs a fixed bundle folder ({ctx.cfg.bundle}); versions need part and parts_dir"
    if ctx.cfg.threshold is not None:
        return f"the station config sets threshold: {ctx.cfg.threshold}, which overrides every bundle's"
    return ""


def versions(ctx: WebContext) -> dict[str, Any]:
    """Every version of the current part, newest first, with threshold, metrics and any web threshold change."""
    cfg = ctx.cfg
    doc: dict[str, Any] = {"part": cfg.part, "versioned": ctx.versioned(), "changes_off": changes_off(ctx),
                           "current": None, "versions": []}
    if not ctx.versioned():
        return doc
    root = Path(cfg.parts_dir)
    doc["current"] = B.current_version(root, cfg.part)
    for v in reversed(B.versions(root, cfg.part)):
        man = manifest(root / cfg.part / f"v{v}")
        metrics = man.get("metrics") or {}
        doc["versions"].append({
            "version": v, "created": man.get("created", ""), "threshold": man.get("threshold"),
            "method": man.get("method", ""), "metrics": {k: metrics[k] for k in METRICS_SHOWN if k in metrics},
            "threshold_change": man.get("threshold_change"), "readiness": man.get("readiness"),
            "current": v == doc["current"]})
    return doc


def change_threshold(ctx: WebContext, threshold: float, who: str) -> str:
    """Write v<N+1> with the new threshold, switch `current` to it, request a reload; returns the version name."""
    off = changes_off(ctx)
    if off:
        raise EdgeAdError(f"threshold changes are off: {off}")
    with ctx.change_lock:
        old = ctx.status.threshold
        path = B.write_threshold_version(ctx.cfg.parts_dir, ctx.cfg.part, threshold, who)
        ctx.stop.request_reload()
    log.info("web: %s set the threshold of part %s from %.6g to %.6g: new version %s, reloading",
             who, ctx.cfg.part, old, threshold, path.name)
    return path.name


def rollback(ctx: WebContext, version: int, who: str) -> str:
    """Switch `current` to an intact older (or newer) version and request a reload."""
    off = changes_off(ctx)
    if off:
        raise EdgeAdError(f"rollback is off: {off}")
    root, part = Path(ctx.cfg.parts_dir), ctx.cfg.part
    with ctx.change_lock:
        target = root / part / f"v{version}"
        if not target.is_dir():
            raise EdgeAdError(f"part {part} has no version v{version}")
        damaged = B.verify(target)
        if damaged:
            raise EdgeAdError(f"v{version} is damaged ({', '.join(damaged)} differ from its manifest): not switching")
        B.switch_current(root, part, version)
        ctx.stop.request_reload()
    log.info("web: %s switched part %s to v%d (rollback), reloading", who, part, version)
    return f"v{version}"
