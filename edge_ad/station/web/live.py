"""The live view: the newest inspected frame with its heatmap and verdict as JPEG, encoded in the web thread.

The loop only swaps references in StationStatus.live; here, at most `fps` times a second and however many
viewers there are, one thread shrinks, colours and encodes the newest frame. A viewer gets the newest frame
or none: frames that arrive between two encodes are never queued.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edge_ad.data import geometry
from edge_ad.errors import EdgeAdError
from edge_ad.station.evidence import frame_map
from edge_ad.station.status import LiveView, StationStatus
from edge_ad.visualize import heatmap_overlay

BOUNDARY = "frame"
OK_BGR, ANOMALY_BGR = (60, 160, 40), (40, 40, 220)
WHOLE_FRAME_SHARE = 0.99  # a "region" covering this much of the frame is the whole frame (nothing to outline)
REGION_BGR = (80, 220, 80)  # outline of the learnt part region (the map is not used outside it), as in the report
MIN_WIDTH = 320  # px; smaller frames are enlarged to this so the verdict banner stays legible
FONT_SCALE = 0.55  # banner text at 640 px width; narrower frames use less, down to MIN_FONT_SCALE
MIN_FONT_SCALE = 0.4
RESEND_S = 2.0  # with no new frame, the last one is sent again this often: browsers show a part only when the
# next one starts, and a write is how the server learns that a viewer has left (its thread is then freed)


@lru_cache(maxsize=4)
def _model_info(bundle: str):
    """The bundle's model.json (preprocessing to place the map on the frame, the part region); None if unreadable."""
    from edge_ad.runtime.manifest import ModelInfo

    try:
        return ModelInfo.load(Path(bundle) / "model.json")
    except EdgeAdError:
        return None


def _data_config(bundle: str):
    info = _model_info(bundle)
    return info.data if info is not None else None


@lru_cache(maxsize=8)
def region_outline(bundle: str, frame_hw: tuple[int, int], source_hw: tuple[int, int]) -> tuple | None:
    """Contours (frame pixels) of the learnt part region, where the map counts; None when the model has none."""
    from edge_ad.region import REGION_EPS, weight_map

    info = _model_info(bundle) if bundle else None
    if info is None or info.scoring.region is None or info.data.align:  # an aligned part's region lies in its
        return None  # posed view, which turns with every frame: one outline on the frame would be wrong
    inside = weight_map(info.scoring.region, info.data.input_size)
    if float((inside > REGION_EPS).mean()) >= WHOLE_FRAME_SHARE:  # evened weights over the whole frame: no outline
        return None
    fmap = frame_map((inside > REGION_EPS).astype(np.float32), frame_hw, geometry(source_hw, info.data))
    contours, _ = cv2.findContours((fmap >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return tuple(contours)


def frame_outline(fmap: np.ndarray, bundle: str) -> tuple | None:
    """Contours of where this frame's map counts, for a model with a frame mask (edge_ad.partmask): the part as
    found in this frame, grown by its margin; the map is exactly zero elsewhere. None for other models."""
    info = _model_info(bundle) if bundle else None
    if info is None or not info.scoring.frame_mask:
        return None
    contours, _ = cv2.findContours((fmap > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return tuple(contours)


def render(live: LiveView, width: int, bundle: str = "") -> np.ndarray:
    """Frame shrunk to at most `width` (tiny ones enlarged to MIN_WIDTH), heatmap blended over it (as the evidence
    overlay), the learnt part region (or, with a frame mask, the part found in this frame) outlined in green, and a
    verdict banner on top. Frames are never enlarged beyond that: encoding cost grows with pixels."""
    image = live.image
    h, w = image.shape[:2]
    target = min(width, max(w, MIN_WIDTH))
    if w != target:
        image = cv2.resize(image, (target, max(1, round(h * target / w))),
                           interpolation=cv2.INTER_AREA if w > target else cv2.INTER_LINEAR)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if live.anomaly_map is not None:
        data = _data_config(bundle) if bundle else None
        fmap = frame_map(live.anomaly_map, image.shape[:2], geometry((h, w), data) if data is not None else None)
        image = heatmap_overlay(image, fmap, 0.0, max(2.0 * live.threshold, live.score), live.threshold)
    else:
        image = image.copy()
    outline = frame_outline(fmap, bundle) if live.anomaly_map is not None else None
    outline = outline if outline is not None else region_outline(bundle, image.shape[:2], (h, w))
    if outline:
        cv2.drawContours(image, list(outline), -1, REGION_BGR, 1, cv2.LINE_AA)
    colour = ANOMALY_BGR if live.anomaly else OK_BGR
    text = f"{'ANOMALY' if live.anomaly else 'OK'}  score {live.score:.4f}  thr {live.threshold:.4f}"
    scale = max(MIN_FONT_SCALE, FONT_SCALE * min(1.0, target / 640))
    banner = round(50 * scale)
    cv2.rectangle(image, (0, 0), (image.shape[1], banner), colour, -1)
    cv2.putText(image, text, (6, round(banner * 0.68)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class LiveEncoder:
    """The newest frame as JPEG, re-encoded at most `fps` times a second; all viewers share one encode."""

    def __init__(self, status: StationStatus, fps: float, width: int, quality: int) -> None:
        self.status = status
        self.min_interval = 1.0 / fps
        self.width = width
        self.params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        self._lock = threading.Lock()
        self._seq = -1
        self._jpeg: bytes | None = None
        self._at = float("-inf")
        self.encoded = 0

    def latest(self) -> tuple[int, bytes | None]:
        """(frame seq, JPEG) of the newest frame, or of the last encode while the rate cap holds."""
        with self._lock:
            live = self.status.live  # one reference read: the loop replaces the object, never mutates it
            now = time.monotonic()
            if live.image is not None and live.seq != self._seq and now - self._at >= self.min_interval:
                ok, buf = cv2.imencode(".jpg", render(live, self.width, self.status.bundle), self.params)
                if ok:
                    self._seq, self._jpeg, self._at = live.seq, buf.tobytes(), now
                    self.encoded += 1
            return self._seq, self._jpeg


def mjpeg(encoder: LiveEncoder, closing: threading.Event) -> Iterator[bytes]:
    """multipart/x-mixed-replace parts, one per new frame, until the server closes or the viewer leaves."""
    sent, sent_at = -1, float("-inf")
    yield f"--{BOUNDARY}\r\n".encode()
    while not closing.is_set():
        seq, jpeg = encoder.latest()
        if jpeg is not None and (seq != sent or time.monotonic() - sent_at >= RESEND_S):
            sent, sent_at = seq, time.monotonic()
            yield (f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg
                   + f"\r\n--{BOUNDARY}\r\n".encode())
        closing.wait(encoder.min_interval)
