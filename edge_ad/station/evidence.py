"""Alarm evidence on disk: the original frame, a heatmap overlay and the boxes, under a size quota.

Each event is one folder `<seq>_<UTC time>/` (original.jpg|png, overlay.jpg, boxes.json), written
under a temporary name and renamed, so a reader never sees half an event. Folders are numbered, so
"oldest first" stays right even when a Jetson boots with its clock wrong. A disk with less than
evidence.min_free_mb free, or a write that fails, skips the event (counted, logged at a bounded rate): evidence
never stops the inspection and never fills the disk. numpy + cv2 only.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_ad.station.config import EvidenceConfig
from edge_ad.station.lograte import log_limited
from edge_ad.visualize import heatmap_overlay

log = logging.getLogger(__name__)

EVENT_NAME = re.compile(r"^(\d{8})_\d{8}T\d{6}\.\d{3}Z$")
BOX_COLOUR = (0, 0, 255)  # BGR red


class MapGeometry(Protocol):
    """edge_ad.data.Geometry: how a frame was placed into the network input (letterbox, crop)."""

    def affine(self, src_hw: tuple[int, int]) -> np.ndarray: ...


def frame_map(anomaly_map: np.ndarray, frame_hw: tuple[int, int], geometry: MapGeometry | None = None) -> np.ndarray:
    """The anomaly map in frame pixels. Without geometry the map covers the whole frame (plain resize);
    with it, letterbox padding and centre crop are undone (frame areas the network never saw read 0)."""
    h, w = frame_hw
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if geometry is None:
        return cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    warp = geometry.affine((h, w))[:2]  # frame pixel -> map pixel
    return cv2.warpAffine(amap, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def find_boxes(fmap: np.ndarray, threshold: float, min_area: int = 0) -> list[dict[str, Any]]:
    """Boxes of connected regions at or above threshold, largest peak first: x, y, w, h, area, peak."""
    mask = (fmap >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        peak = float(fmap[y:y + h, x:x + w][labels[y:y + h, x:x + w] == i].max())
        boxes.append({"x": x, "y": y, "w": w, "h": h, "area": area, "peak": round(peak, 6)})
    return sorted(boxes, key=lambda b: -b["peak"])


def render_overlay(frame_bgr: np.ndarray, fmap: np.ndarray, threshold: float, score: float,
                   boxes: list[dict[str, Any]]) -> np.ndarray:
    """Heatmap (0 .. max(2 x threshold, score), as `edge_ad predict`) with region outlines and boxes."""
    out = heatmap_overlay(frame_bgr, fmap, 0.0, max(2.0 * threshold, score), threshold)
    for b in boxes:
        cv2.rectangle(out, (b["x"], b["y"]), (b["x"] + b["w"] - 1, b["y"] + b["h"] - 1), BOX_COLOUR, 2)
    cv2.putText(out, f"score {score:.3f} / thr {threshold:.3f}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


@dataclass
class EvidenceRecord:
    """What was saved; `path` is None when nothing is on disk (disabled, write error, over quota)."""

    path: Path | None
    boxes: list[dict[str, Any]] = field(default_factory=list)


def _dir_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.iterdir() if p.is_file() and not p.is_symlink())


class EvidenceStore:
    """Saves events and deletes the oldest ones to stay under evidence.max_mb and evidence.max_events."""

    def __init__(self, cfg: EvidenceConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.dir)
        self.max_bytes = int(cfg.max_mb * 1024 * 1024)
        self._lock = threading.Lock()
        self._events: list[tuple[int, Path, int]] = []  # (seq, folder, bytes), oldest first
        self._bytes = 0
        self.deleted = 0
        self.write_errors = 0  # events not saved: a failed write or too little free disk
        if not cfg.enabled:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full or read-only disk: saving retries (and counts) per event
            log.error("evidence.dir %s: cannot create it (%s); events are not saved until it can be",
                      self.root, exc.strerror or exc)
        self._next = 1
        if not self.root.is_dir():
            return
        for stale in self.root.glob(".tmp-*"):  # a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)
        for path in self.root.iterdir():
            match = EVENT_NAME.match(path.name)
            if match and path.is_dir() and not path.is_symlink():  # a linked folder is not an event: never deleted
                self._events.append((int(match.group(1)), path, _dir_bytes(path)))
        self._events.sort()
        self._bytes = sum(b for _, _, b in self._events)
        self._next = self._events[-1][0] + 1 if self._events else 1
        self._enforce_quota()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def events(self) -> list[Path]:
        """Event folders, oldest first."""
        with self._lock:
            return [p for _, p, _ in self._events]

    def save(self, frame_bgr: np.ndarray, anomaly_map: np.ndarray, threshold: float, score: float,
             meta: dict[str, Any] | None = None, geometry: MapGeometry | None = None,
             when: float | None = None) -> EvidenceRecord:
        """Write one event; boxes are returned even when evidence is disabled (the MQTT event needs them).
        Disk errors are logged, never raised: evidence must not stop the inspection."""
        fmap = frame_map(anomaly_map, frame_bgr.shape[:2], geometry)
        boxes = find_boxes(fmap, threshold, self.cfg.min_box_area)
        if not self.cfg.enabled:
            return EvidenceRecord(None, boxes)
        when = time.time() if when is None else when
        stamp = datetime.fromtimestamp(when, timezone.utc)
        with self._lock:
            seq = self._next
            self._next += 1
        name = f"{seq:08d}_{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}Z"
        tmp = self.root / f".tmp-{name}"
        final = self.root / name
        try:
            free = shutil.disk_usage(self.root).free
            if free < self.cfg.min_free_mb * 2**20:
                raise OSError(f"only {free / 2**20:.1f} MiB free (evidence.min_free_mb {self.cfg.min_free_mb:g})")
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            quality = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
            original = tmp / f"original.{self.cfg.original_format}"
            ok = cv2.imwrite(str(original), frame_bgr, quality if self.cfg.original_format == "jpg" else [])
            ok &= cv2.imwrite(str(tmp / "overlay.jpg"), render_overlay(frame_bgr, fmap, threshold, score, boxes),
                              quality)
            if not ok:
                raise OSError("cv2.imwrite failed")
            record = {
                "score": float(score), "threshold": float(threshold), "boxes": boxes,
                "frame": {"width": int(frame_bgr.shape[1]), "height": int(frame_bgr.shape[0])},
                "time": when, "time_iso": stamp.isoformat(timespec="milliseconds"), **(meta or {}),
            }
            (tmp / "boxes.json").write_text(json.dumps(record, indent=1, default=str))
            tmp.rename(final)
        except (OSError, cv2.error) as exc:
            self.write_errors += 1
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
            log_limited(log, logging.ERROR, f"evidence:{self.root}", "evidence: cannot save event %s in %s: %s "
                        "(%d event(s) not saved so far)", name, self.root, why, self.write_errors)
            shutil.rmtree(tmp, ignore_errors=True)
            return EvidenceRecord(None, boxes)
        size = _dir_bytes(final)
        with self._lock:
            self._events.append((seq, final, size))
            self._bytes += size
        self._enforce_quota()
        return EvidenceRecord(final if final.exists() else None, boxes)

    def _enforce_quota(self) -> None:
        """Delete oldest events until both limits hold (the newest too, if it alone is over the size)."""
        with self._lock:
            while self._events and (
                self._bytes > self.max_bytes
                or (self.cfg.max_events and len(self._events) > self.cfg.max_events)
            ):
                _, path, size = self._events.pop(0)
                self._bytes -= size
                shutil.rmtree(path, ignore_errors=True)
                self.deleted += 1
                if not self._events:
                    log.warning("evidence: one event (%d bytes) is larger than evidence.max_mb; not kept", size)
                else:
                    log.info("evidence: quota reached, deleted the oldest event %s", path.name)
