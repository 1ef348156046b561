"""The last alarms as rows for the page, read from the evidence store's folders (immutable once renamed), so the
list survives a restart; without evidence on disk, from StationStatus's recent alarms (no pictures then)."""

from __future__ import annotations

import json
import os
import stat
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from edge_ad.station.evidence import EVENT_NAME
from edge_ad.station.status import StationStatus

FILES = ("original.jpg", "original.png", "overlay.jpg", "boxes.json")
THUMB_WIDTH = 240  # px
THUMB_QUALITY = 80
MAX_RECORD_BYTES = 1 << 20  # a boxes.json is a few KB; a larger one is not read whole
MAX_OVERLAY_BYTES = 64 << 20  # an overlay is a JPEG of one frame


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def event_dir(root: str | Path, name: str) -> Path | None:
    """The folder of one evidence event, or None for anything that is not an event name, not a real folder (a
    symlink is not) or not inside the evidence folder once resolved (no path tricks)."""
    if not EVENT_NAME.match(name):
        return None
    path = Path(root) / name
    try:
        real = stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return None
    return path if real and _inside(path, Path(root)) else None


def event_file(folder: Path, name: str) -> Path | None:
    """One file of an event folder: a regular file (not a symlink) whose resolved path stays in the folder."""
    if name not in FILES:
        return None
    path = folder / name
    try:
        regular = stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return None
    return path if regular and _inside(path, folder) else None


def open_event_file(folder: Path, name: str) -> BinaryIO | None:
    """event_file() opened without following a link (O_NOFOLLOW), checked again on the open descriptor, so a file
    swapped for a symlink after the check is not served."""
    path = event_file(folder, name)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


@lru_cache(maxsize=256)
def _record(folder: str) -> dict[str, Any]:
    f = open_event_file(Path(folder), "boxes.json")
    if f is None:
        return {}
    try:
        with f:
            return json.loads(f.read(MAX_RECORD_BYTES + 1)[:MAX_RECORD_BYTES])
    except (OSError, ValueError):
        return {}


def original_name(folder: Path) -> str | None:
    """original.jpg or original.png, whichever the event has as a regular file."""
    return next((f for f in ("original.jpg", "original.png") if event_file(folder, f)), None)


def _row(folder: Path) -> dict[str, Any]:
    rec = _record(str(folder))
    original = original_name(folder)
    frame = rec.get("frame")  # the loop's frame index (its meta), else the frame size: not shown
    return {"id": folder.name, "time": rec.get("time"), "time_iso": rec.get("time_iso", ""), "score": rec.get("score"),
            "threshold": rec.get("threshold"), "boxes": len(rec.get("boxes", [])),
            "frame": frame if isinstance(frame, int) else None, "model": rec.get("model", ""), "original": original}


LISTING_MAX_AGE_S = 10.0  # listed again at least this often (a rename in the same timestamp tick as a listing)
_listing: dict[str, tuple[tuple[int, int, int], list[str]]] = {}


def event_names(root: Path) -> list[str]:
    """Event folder names, newest first; listed again when the folder changed (events are renamed in or removed: mtime
    and nlink move) or every LISTING_MAX_AGE_S, not at every request: a day of alarms is thousands of folders."""
    st = root.stat()
    key = (st.st_mtime_ns, st.st_nlink, int(time.monotonic() // LISTING_MAX_AGE_S))
    cached = _listing.get(str(root))
    if cached is None or cached[0] != key:
        cached = (key, sorted((p.name for p in root.iterdir() if EVENT_NAME.match(p.name)), reverse=True))
        _listing[str(root)] = cached
    return cached[1]


def alarm_rows(evidence_dir: str, enabled: bool, status: StationStatus, n: int) -> list[dict[str, Any]]:
    """Newest first, at most n."""
    root = Path(evidence_dir)
    if enabled and root.is_dir():
        names = event_names(root)[:n]
        return [_row(root / name) for name in names if event_dir(root, name)]
    return [{"id": None, "time": a.time, "time_iso": "", "score": a.score, "threshold": a.threshold,
             "boxes": a.boxes, "frame": a.frame, "model": "", "original": None} for a in status.recent_alarms()[:n]]


def event_record(folder: Path) -> dict[str, Any]:
    """The whole boxes.json of one event (score, threshold, boxes, frame size, time, model)."""
    return _record(str(folder))


@lru_cache(maxsize=64)
def thumbnail(folder: str) -> bytes | None:
    """A small JPEG of the event's overlay (events never change, so caching by folder is safe)."""
    f = open_event_file(Path(folder), "overlay.jpg")
    if f is None:
        return None
    with f:
        data = np.frombuffer(f.read(MAX_OVERLAY_BYTES), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > THUMB_WIDTH:
        image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    return buf.tobytes() if ok else None
