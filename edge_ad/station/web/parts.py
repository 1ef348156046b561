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


def _check_running(ctx: WebContext, running: str) -> int | None:
    """The version the operator was looking at must be the one the station runs (else the page is stale or
    `current` moved on): its number, None when the station runs no version."""
    now = ctx.status.version or ""
    if (running or "") != now:
        raise EdgeAdError(f"the page showed {running or 'no model'} but the station runs {now or 'no model'}: "
                          "nothing changed; look again")
    if not now:
        return None
    if not (now.startswith("v") and now[1:].isdigit()) or Path(ctx.status.bundle).parent.resolve() != \
            (Path(ctx.cfg.parts_dir) / ctx.cfg.part).resolve():
        raise EdgeAdError(f"the station runs {ctx.status.bundle}, not a version of part {ctx.cfg.part}")
    return int(now[1:])


def change_threshold(ctx: WebContext, threshold: float, who: str, running: str, confirm: bool = False) -> str:
    """Write a copy of the running version with the new threshold, switch `current` to it (only while `current` is
    still the running version), request a reload; returns the new version's name. B.NeedsConfirmation when the
    threshold is far outside what calibration measured and `confirm` is not set."""
    off = changes_off(ctx)
    if off:
        raise EdgeAdError(f"threshold changes are off: {off}")
    source = _check_running(ctx, running)
    if source is None:
        raise EdgeAdError("the station runs no model: there is no threshold to change (roll back to a version first)")
    path = B.write_threshold_version(ctx.cfg.parts_dir, ctx.cfg.part, threshold, who, from_version=source,
                                     confirm=confirm)
    ctx.stop.request_reload()
    change = manifest(path).get("threshold_change") or {}
    log.info("web: %s set the threshold of part %s %s from %.6g to %.6g%s: new version %s, reloading", who,
             ctx.cfg.part, running, change.get("old", float("nan")), threshold,
             " (confirmed outside the calibrated window)" if change.get("confirmed_outside_window") else "", path.name)
    return path.name


def rollback(ctx: WebContext, version: int, who: str, running: str, current: int | None) -> str:
    """Switch `current` to an intact version (only while `current` is still the one the page showed) and request a
    reload."""
    off = changes_off(ctx)
    if off:
        raise EdgeAdError(f"rollback is off: {off}")
    _check_running(ctx, running)
    root, part = Path(ctx.cfg.parts_dir), ctx.cfg.part
    if current is None:
        raise EdgeAdError("current: the version the page showed as current is needed")
    if not (root / part / f"v{version}").is_dir():
        raise EdgeAdError(f"part {part} has no version v{version}")
    B.rollback(root, part, version, expect=current)
    ctx.stop.request_reload()
    log.info("web: %s switched part %s from v%d to v%d (rollback; the station ran %s), reloading", who, part, current,
             version, running or "no model")
    return f"v{version}"
