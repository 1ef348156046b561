"""Frame sources from one URI, and a grabber thread that hands the loop only the newest frame.

URIs (jetson-inference style, so a bench video and the station camera differ by one argument):
  part.avi, file:///data/run.mp4     a video file
  /data/images/                      a folder of images (sorted by name), image.png: one image
  0, /dev/video0                     a V4L2 device (USB camera)
  rtsp://..., http://...             a network stream (FFmpeg)
  csi://0                            a Jetson CSI camera: camera.csi_pipeline filled in
  gst://<pipeline>, or any text with '!'   a GStreamer pipeline ending in appsink

Files and folders end cleanly; live sources (and files with camera.live) reconnect with backoff: a source
that fails to open, or opens and yields no frame, waits reconnect_min_s, doubling up to reconnect_max_s, so a
dead camera costs neither CPU nor log lines. No torch here: numpy and cv2 only.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edge_ad.data import IMAGE_SUFFIXES, ImageError, load_image
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import FILE_MODES, CameraConfig
from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STOP_TIMEOUT_S = 1.0  # stop() waits this long for a grabber blocked in a driver call (it is a daemon thread)


@dataclass
class Frame:
    """One captured BGR frame; `index` counts every frame the source produced, delivered or dropped."""

    image: np.ndarray
    index: int
    time: float  # time.time() when grabbed
    name: str  # file name for folders, else the URI
    mono: float = 0.0  # time.monotonic() when grabbed: triggered mode compares it (a wall-clock step moves nothing)


@dataclass
class CameraStats:
    grabbed: int = 0
    delivered: int = 0
    dropped: int = 0  # grabbed but overwritten by a newer frame before the loop took it
    skipped: int = 0  # unreadable images / corrupt frames
    reconnects: int = 0


class _OpenError(Exception):
    """A source could not be opened (live sources retry; files raise EdgeAdError)."""


def has_gstreamer() -> bool:
    """OpenCV from pip has no GStreamer; JetPack's system cv2 does."""
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


class _FolderSource:
    kind = "folder"

    def __init__(self, path: Path, live: bool) -> None:
        self.path = path
        self.live = live
        self.fps: float | None = None
        self.skipped = 0
        self.name = str(path)
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        if self.path.is_file():
            self._files = [self.path]
        elif self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise _OpenError(f"{self.path} does not exist")
        if not self._files:
            raise _OpenError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")
        self._pos = 0

    def read(self) -> np.ndarray | None:
        while self._pos < len(self._files):
            path = self._files[self._pos]
            self._pos += 1
            try:
                image = load_image(path)  # any depth and channels, and the pixel cap before decoding
            except ImageError as exc:
                self.skipped += 1
                log_limited(log, logging.WARNING, f"camera-skip:{self.path}", "camera: skipping an unreadable image: %s", exc)
                continue
            self.name = path.name
            return image
        return None

    def close(self) -> None:
        self._files = []


class _CvSource:
    """Anything cv2.VideoCapture opens: video files, V4L2 devices, network streams, GStreamer pipelines."""

    def __init__(self, target: str | int, api: int, live: bool, cfg: CameraConfig, kind: str) -> None:
        self.target = target
        self.api = api
        self.live = live
        self.cfg = cfg
        self.kind = kind
        self.fps: float | None = None
        self.skipped = 0
        self.name = str(target)
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        params: list[int] = []
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.cfg.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.cfg.read_timeout_s * 1000)]
            if self.cfg.rtsp_tcp:
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        cap = cv2.VideoCapture(self.target, self.api, params) if params else cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            raise _OpenError(f"OpenCV cannot open {self.kind} {self.target}")
        if self.kind == "device":
            if self.cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.cfg.fourcc[:4].ljust(4)))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        self._cap = cap

    def read(self) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            return None
        while True:
            ok, frame = cap.read()
            if ok and frame is not None and frame.size:
                return frame
            if self.kind != "video":
                return None
            # A video file: a decode error before the last frame is a corrupt frame, not the end.
            pos, count = cap.get(cv2.CAP_PROP_POS_FRAMES), cap.get(cv2.CAP_PROP_FRAME_COUNT)
            if not (0 < count and pos < count - 1 and cap.grab()):
                return None
            self.skipped += 1
            log_limited(log, logging.WARNING, f"camera-skip:{self.target}", "camera: skipping corrupt frame %d of %s",
                        int(pos), self.target)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def csi_pipeline(sensor_id: int, cfg: CameraConfig) -> str:
    """The GStreamer pipeline for a Jetson CSI sensor, from the camera.csi_pipeline template."""
    try:
        return cfg.csi_pipeline.format(
            sensor_id=sensor_id, width=cfg.width, height=cfg.height, fps=int(round(cfg.fps)), flip=cfg.flip
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise EdgeAdError(
            f"camera.csi_pipeline: bad placeholder {exc} (allowed: sensor_id, width, height, fps, flip)"
        ) from None


def open_source(uri: str, cfg: CameraConfig) -> _FolderSource | _CvSource:
    """Pick the source type from the URI; errors a user can fix are EdgeAdError."""
    text = uri.strip()
    if text.startswith("csi://"):
        sensor = text[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise EdgeAdError(f"camera source {uri!r}: csi:// takes a sensor number, e.g. csi://0")
        text = "gst://" + csi_pipeline(int(sensor), cfg)
    if text.startswith("gst://") or "!" in text:
        if not has_gstreamer():
            raise EdgeAdError(
                f"camera source {uri!r} needs OpenCV with GStreamer; pip's opencv-python has none "
                "(on a Jetson use JetPack's python3-opencv, e.g. a venv with --system-site-packages)"
            )
        return _CvSource(text.removeprefix("gst://"), cv2.CAP_GSTREAMER, True, cfg, "gstreamer")
    if text.lower().startswith(STREAM_SCHEMES):
        return _CvSource(text, cv2.CAP_FFMPEG, True, cfg, "stream")
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        device: str | int = int(text) if text.isdigit() else text
        return _CvSource(device, cv2.CAP_V4L2, True, cfg, "device")
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.exists() and not cfg.live:
        raise EdgeAdError(f"camera source not found: {path}")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return _FolderSource(path, cfg.live)
    return _CvSource(str(path), cv2.CAP_FFMPEG, cfg.live, cfg, "video")


class Camera:
    """Runs the source in a thread; `read()` returns the newest frame not yet delivered.

    Modes: `latest` keeps one slot and counts overwritten frames as dropped (always used for live
    sources); `every` delivers every file frame in order (tests, replay); `realtime` paces a file at
    its fps and drops like a live camera.
    """

    def __init__(self, uri: str, cfg: CameraConfig | None = None, mode: str | None = None, history: int = 0) -> None:
        self.uri = uri
        self.cfg = cfg or CameraConfig()
        self.source = open_source(uri, self.cfg)
        self.live = self.source.live
        self.mode = "latest" if self.live else (mode or self.cfg.file_mode)
        if self.mode not in FILE_MODES:
            raise EdgeAdError(f"camera mode must be one of {', '.join(FILE_MODES)}, got {self.mode!r}")
        self.stats = CameraStats()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        # triggered mode: the newest `history` frames with their capture time instead of the one slot
        self._history: deque[Frame] | None = deque(maxlen=history) if history > 0 else None
        self._evicted_time = 0.0  # capture time of the newest frame pushed out of the history
        self._stop = threading.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._failures = 0  # live sources: attempts in a row that yielded no frame
        self._lost_at: float | None = None
        self._last_frame_at = 0.0  # time.monotonic() of the newest grabbed frame
        self.state = "starting"  # starting | ok | lost | ended (what the status page shows)
        self.last_error = ""  # why the source has no frames right now

    @property
    def is_file(self) -> bool:
        """A video file, a folder or one image (not a device or a stream)."""
        return self.source.kind in ("folder", "video")

    @property
    def replay(self) -> bool:
        """A file or folder replayed as a camera: its end is a restart, not a lost camera."""
        return self.live and self.is_file

    # --- consumer side ----------------------------------------------------------------------
    def start(self) -> Camera:
        """Open the source (files: now, so a bad file fails here) and start the grabber thread."""
        if self._thread is not None:
            return self
        self._started_at = time.monotonic()
        opened = False
        if not self.live:
            try:
                self.source.open()
                opened = True
            except _OpenError as exc:
                raise EdgeAdError(f"camera source {self.uri}: {exc}") from None
        self._thread = threading.Thread(target=self._run, args=(opened,), name="edge_ad-camera", daemon=True)
        self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest undelivered frame; None on timeout or when the source has finished (see `finished`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise EdgeAdError(f"camera source {self.uri} failed: {error}")
                if self._ended or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self.stats.delivered += 1
            self._cond.notify_all()
            return frame

    def frames_from(self, since: float, n: int, timeout: float) -> tuple[list[Frame], str]:
        """Triggered mode: the first `n` frames captured at or after `since` (time.monotonic()), waiting up to
        `timeout` for them; with fewer, the reason ("" when all n came)."""
        assert self._history is not None, "frames_from needs a camera made with history > 0"
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._evicted_time >= since:
                    return [], "its frame was pushed out of the camera history (inspection fell behind the triggers)"
                got = [f for f in self._history if f.mono >= since][:n]
                if len(got) == n:
                    return got, ""
                remaining = deadline - time.monotonic()
                if self._ended or self._stop.is_set() or remaining <= 0:
                    why = "the camera source ended" if self._ended else "no frame captured in time"
                    return got, "" if got else why
                self._cond.wait(remaining)

    @property
    def finished(self) -> bool:
        """True once a file source has delivered its last frame (never for a live source)."""
        with self._cond:
            return (self._ended or self._stop.is_set()) and self._slot is None

    def seconds_without_frames(self) -> float:
        """Seconds since the newest grabbed frame (or since start, before the first one)."""
        with self._cond:
            since = self._last_frame_at or self._started_at
        return time.monotonic() - since if since else 0.0

    @property
    def pending(self) -> int:
        """Frames waiting for the loop: 0 or 1, never a backlog."""
        with self._cond:
            return int(self._slot is not None)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera %s: grabber still blocked in a read after %.1f s", self.uri, timeout)
            self._thread = None

    def __enter__(self) -> Camera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(timeout=0.5)
            if frame is not None:
                yield frame
            elif self.finished:
                return

    # --- grabber thread ------------------------------------------------------------------------
    def _run(self, opened: bool) -> None:
        try:
            if self.live:
                self._run_live(opened)
            else:
                self._run_file()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer by read()
            log.exception("camera %s: grabber failed", self.uri)
            with self._cond:
                self._error = exc
        finally:
            self.source.close()
            with self._cond:
                self.stats.skipped = self.source.skipped
                self._ended = True
                self.state = "ended"
                self._cond.notify_all()

    def _paced(self) -> bool:
        """Files in realtime mode, and files replayed as a live camera, run at their own frame rate."""
        return self.is_file and (self.mode == "realtime" or self.live)

    def _pace(self, start: float, n: int) -> bool:
        """Sleep until frame n of a paced source is due; True when a stop was requested meanwhile."""
        delay = start + n / (self.source.fps or self.cfg.fps) - time.monotonic()
        return delay > 0 and self._stop.wait(delay)

    def _run_file(self) -> None:
        paced = self._paced()
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if paced and self._pace(start, n):
                return
            image = self.source.read()
            if image is None:
                log.info("camera %s: end of file after %d frame(s)", self.uri, self.stats.grabbed)
                return
            n += 1
            self._publish(image)

    def _run_live(self, opened: bool) -> None:
        """Grab forever. An attempt (open + reads) that yields no frame is a failure: the next one waits
        reconnect_min_s, doubling up to reconnect_max_s. An attempt that yielded frames and then ended (a
        replayed file at its end, a camera that hiccuped) is reopened at once."""
        self._failures, self._lost_at = 0, None
        paced = self._paced()
        while not self._stop.is_set():
            if not opened:
                if self._failures and self._stop.wait(self._delay(self._failures)):
                    return
                try:
                    self.source.open()
                    opened = True
                except _OpenError as exc:
                    self._failed(str(exc))
                    continue
            n = self._grab_until_lost(paced)
            self.source.close()
            opened = False
            if self._stop.is_set():
                return
            if not n:
                self._failed("opened but yielded no frame")
                continue
            self._lost_at = time.monotonic()
            if self.replay:
                log.debug("camera %s: end of the replayed file; starting over", self.uri)
                continue
            with self._cond:
                self.state, self.last_error = "lost", "no frame (source lost or ended)"
            log_limited(log, logging.WARNING, f"camera-lost:{self.uri}",
                        "camera %s: no frame (source lost or ended); reconnecting", self.uri)

    def _grab_until_lost(self, paced: bool) -> int:
        """Publish frames until the source yields none (or a stop); returns how many it yielded."""
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            try:
                image = self.source.read()
            except Exception as exc:  # noqa: BLE001 - a driver error is a lost source here, never a dead grabber
                log_limited(log, logging.WARNING, f"camera-error:{self.uri}", "camera %s: read failed: %s", self.uri, exc)
                image = None
            if image is None:
                return n
            if n == 0:
                self._frames_again()  # before the frame is handed over: a reader sees the reconnect counted
            self._publish(image)
            n += 1
            if paced and self._pace(start, n):
                return n
        return n

    def _delay(self, failures: int) -> float:
        return min(self.cfg.reconnect_min_s * 2 ** (failures - 1), self.cfg.reconnect_max_s)

    def _failed(self, why: str) -> None:
        """One more attempt without a frame: the source is lost, the next attempt waits longer."""
        self._failures += 1
        self._lost_at = self._lost_at or time.monotonic()
        with self._cond:
            self.state, self.last_error = "lost", why
        log_limited(log, logging.WARNING, f"camera-lost:{self.uri}", "camera %s: %s (attempt %d); retrying in %.2f s",
                    self.uri, why, self._failures, self._delay(self._failures))

    def _frames_again(self) -> None:
        """The first frame of an attempt: a reconnect if frames had stopped."""
        if self._lost_at is not None:
            self.stats.reconnects += 1
            if self._failures or not self.replay:  # a replayed file starting over is not news
                log_limited(log, logging.INFO, f"camera-back:{self.uri}", "camera %s: reconnected after %d failed "
                            "attempt(s), %.1f s without frames", self.uri, self._failures, time.monotonic() - self._lost_at)
        self._failures, self._lost_at = 0, None

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(image=image, index=self.stats.grabbed, time=time.time(), name=self.source.name,
                      mono=time.monotonic())
        with self._cond:
            self._last_frame_at = time.monotonic()
            self.state, self.last_error = "ok", ""
            self.stats.grabbed += 1
            self.stats.skipped = self.source.skipped
            if self._history is not None:  # triggered mode: kept by capture time, taken by frames_from()
                if len(self._history) == self._history.maxlen:
                    self._evicted_time = self._history[0].mono
                self._history.append(frame)
                self._cond.notify_all()
                return
            if self.mode == "every":
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._slot is not None:
                self.stats.dropped += 1
            self._slot = frame
            self._cond.notify_all()
