"""Camera sources on real files, folders and a real HTTP MJPEG stream (an IP camera stand-in)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.station.camera import Camera, csi_pipeline, has_gstreamer, open_source
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import CSI_PIPELINE, CameraConfig

try:
    from helpers import wait_until
except ImportError:
    from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
STEP = 6  # frame i is a flat image of value i * STEP: survives MJPG compression, identifies the frame


def write_video(path: Path, n: int, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((48, 64, 3), i * STEP, np.uint8))
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    return int(round(float(image.mean()) / STEP))


def fast_cfg(**kw) -> CameraConfig:
    base = dict(reconnect_min_s=0.05, reconnect_max_s=0.4, open_timeout_s=1.0, read_timeout_s=0.5)
    base.update(kw)
    return CameraConfig(**base)


class MjpegServer:
    """A tiny HTTP MJPEG camera: frames carry their counter; stop() kills it, start() brings it back."""

    def __init__(self, fps: float = 200.0):
        self.fps = fps
        self.port = None
        self.counter = 0
        self._server = None
        self._alive = threading.Event()

    def start(self) -> "MjpegServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while owner._alive.is_set():
                        value = (owner.counter * STEP) % 250
                        owner.counter += 1
                        jpg = cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        time.sleep(1.0 / owner.fps)  # pacing: the fake camera runs at its frame rate
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._alive.set()
        # serve_forever checks for shutdown() every poll_interval (default 0.5 s): stop() returns within 20 ms
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()  # open streams end: the client sees the connection close
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


@pytest.fixture
def mjpeg():
    server = MjpegServer().start()
    yield server
    if server._alive.is_set():
        server.stop()


def test_video_file_every_mode_delivers_all_frames_in_order(tmp_path):
    video = write_video(tmp_path / "run.avi", 40)
    with Camera(str(video), CameraConfig(file_mode="every")) as cam:
        frames = []
        for frame in cam:
            frames.append(frame)
            if len(frames) % 10 == 0:
                time.sleep(0.05)  # a slow consumer must not lose frames in this mode
    assert [f.index for f in frames] == list(range(40))
    assert [frame_number(f.image) for f in frames] == list(range(40))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert cam.finished and cam.stats.dropped == 0 and cam.stats.delivered == 40
    assert cam.read(timeout=0.1) is None


def test_realtime_mode_paces_at_file_fps_and_drops(tmp_path):
    video = write_video(tmp_path / "fast.avi", 30, fps=100.0)
    cam = Camera(str(video), CameraConfig(file_mode="realtime")).start()
    t0 = time.monotonic()
    got = []
    for frame in cam:
        got.append(frame.index)
        time.sleep(0.03)  # consumer at ~33 fps, source at 100 fps
    elapsed = time.monotonic() - t0
    cam.stop()
    assert elapsed >= 0.28, "30 frames at 100 fps take 0.3 s in realtime mode"
    assert got == sorted(got) and len(got) < 20
    assert cam.stats.dropped >= 10
    assert cam.stats.delivered + cam.stats.dropped == cam.stats.grabbed == 30


def test_latest_frame_fast_live_source_slow_consumer(mjpeg):
    cam = Camera(mjpeg.url, fast_cfg()).start()
    try:
        ages, indices, drops = [], [], []
        for _ in range(12):
            frame = cam.read(timeout=5)
            assert frame is not None
            ages.append(time.time() - frame.time)
            indices.append(frame.index)
            drops.append(cam.stats.dropped)
            assert cam.pending <= 1  # a single slot: there is no backlog to grow
            time.sleep(0.05)  # inference slower than the camera
        assert all(b > a for a, b in zip(indices, indices[1:]))
        # queued frames would age by 0.05 s per read (0.5 s by the end); the newest one is a few ms old
        assert max(ages[1:]) < 0.2, f"frames must be fresh, ages {ages}"
        assert drops[-1] > drops[1] > 0  # the source kept running and the overwritten frames were counted
        with cam._cond:  # a consistent snapshot: every grabbed frame was delivered, dropped, or is the one pending
            s = cam.stats
            assert s.grabbed == s.delivered + s.dropped + (cam._slot is not None)
    finally:
        cam.stop()


def test_folder_skips_corrupt_image_and_ignores_other_files(tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), np.full((20, 30, 3), i * STEP, np.uint8))
    (folder / "img_02b.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (folder / "notes.txt").write_text("not an image")
    caplog.set_level(logging.WARNING)
    with Camera(str(folder)) as cam:
        frames = list(cam)
    assert [f.name for f in frames] == ["img_00.png", "img_01.png", "img_02.png", "img_03.png"]
    assert [frame_number(f.image) for f in frames] == [0, 1, 2, 3]
    assert cam.stats.skipped == 1
    assert "skipping an unreadable image" in caplog.text and "img_02b.png" in caplog.text


def test_live_stream_dies_and_comes_back_with_backoff(mjpeg, caplog):
    caplog.set_level(logging.INFO, logger="edge_ad.station.camera")
    cam = Camera(mjpeg.url, fast_cfg()).start()
    try:
        assert cam.read(timeout=5) is not None
        mjpeg.stop()

        def retries():
            return [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]

        wait_until(lambda: len(retries()) >= 4, timeout=5)
        delays = retries()
        assert delays[:4] == [0.05, 0.1, 0.2, 0.4], delays  # doubling backoff, capped at reconnect_max_s
        assert "no frame (source lost or ended); reconnecting" in caplog.text
        assert not cam.finished  # a live source never "ends"

        restarted = time.time()
        mjpeg.start()  # same port
        frame = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = cam.read(timeout=1)
            if frame is not None and frame.time > restarted:
                break
        assert frame is not None and frame.time > restarted
        assert cam.stats.reconnects == 1
        assert re.search(r"reconnected after \d+ failed attempt", caplog.text)
    finally:
        cam.stop()


def test_unreachable_rtsp_retries_with_backoff_and_stops_promptly(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    caplog.set_level(logging.WARNING, logger="edge_ad.station.camera")
    cam = Camera(f"rtsp://127.0.0.1:{port}/stream", fast_cfg()).start()
    wait_until(lambda: caplog.text.count("retrying in") >= 3, timeout=5)
    assert cam.read(timeout=0.05) is None and not cam.finished
    t0 = time.monotonic()
    cam.stop()
    assert time.monotonic() - t0 < 1.0
    delays = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert len(delays) >= 3 and delays[:3] == [0.05, 0.1, 0.2]
    assert f"rtsp://127.0.0.1:{port}/stream" in caplog.text


def test_live_file_replay_reopens_at_the_end(tmp_path):
    video = write_video(tmp_path / "loop.avi", 5, fps=50.0)
    cam = Camera(str(video), fast_cfg(live=True)).start()
    try:
        t0 = time.monotonic()
        seen = []
        while len(seen) < 12 and time.monotonic() - t0 < 5:
            frame = cam.read(timeout=1)
            if frame is not None:
                seen.append(frame)
        elapsed = time.monotonic() - t0
        assert len(seen) == 12 and cam.stats.reconnects >= 2
        assert elapsed >= 0.2, "a replayed file runs at its own fps like a camera, not as fast as it decodes"
        numbers = [frame_number(f.image) for f in seen]
        assert any(b < a for a, b in zip(numbers, numbers[1:])), numbers  # it wrapped around to the start
    finally:
        cam.stop()


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(EdgeAdError, match="not found"):
        Camera(str(tmp_path / "missing.avi"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeAdError, match="no images"):
        Camera(str(empty)).start()
    with pytest.raises(EdgeAdError, match="csi:// takes a sensor number"):
        Camera("csi://left")
    bad = (tmp_path / "garbage.avi")
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(EdgeAdError, match="cannot open"):
        Camera(str(bad)).start()


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer: the missing-GStreamer message cannot show")
def test_gstreamer_sources_need_gstreamer_opencv():
    for uri in ("csi://0", "gst://videotestsrc ! appsink", "videotestsrc ! videoconvert ! appsink"):
        with pytest.raises(EdgeAdError, match="GStreamer"):
            open_source(uri, CameraConfig())


def test_csi_template_matches_the_jetson_pipeline_file():
    cfg = CameraConfig(width=1280, height=720, fps=60, flip=2)
    text = csi_pipeline(1, cfg)
    assert "nvarguscamerasrc sensor-id=1" in text and "width=1280,height=720,framerate=60/1" in text
    assert "flip-method=2" in text and text.rstrip().endswith("sync=false")
    shipped = (ROOT / "jetson" / "pipelines" / "csi.txt").read_text()
    template = [line for line in shipped.splitlines() if line.strip() and not line.startswith("#")]
    assert " ".join(template).strip() == CSI_PIPELINE
    with pytest.raises(EdgeAdError, match="placeholder"):
        csi_pipeline(0, CameraConfig(csi_pipeline="nvarguscamerasrc sensor-id={sensor}"))


def first_frame_does_not_decode(tmp_path: Path) -> Path:
    """An MJPG AVI cut right after its header: OpenCV opens it, and its first read fails (4b5's second case)."""
    full = write_video(tmp_path / "full.avi", 5).read_bytes()
    cut = tmp_path / "cut.avi"
    for size in range(256, len(full), 64):
        cut.write_bytes(full[:size])
        cap = cv2.VideoCapture(str(cut))
        opened, ok = cap.isOpened(), cap.isOpened() and cap.read()[0]
        cap.release()
        if opened:
            assert not ok, "the cut file decodes a frame: make the cut smaller"
            return cut
    pytest.skip("this OpenCV never opens a cut MJPG AVI")


@pytest.mark.parametrize("kind", ["folder of unreadable images", "video whose first frame does not decode"])
def test_a_live_source_that_opens_but_yields_nothing_backs_off(kind, tmp_path, caplog):
    """4b5: such a source was reopened at once forever (100 % CPU, ~386,000 log lines in 5 s)."""
    if kind.startswith("folder"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "a.png").write_bytes(b"x")
        uri = str(tmp_path / "bad")
    else:
        uri = str(first_frame_does_not_decode(tmp_path))
    caplog.set_level(logging.INFO, logger="edge_ad.station.camera")
    cam = Camera(uri, fast_cfg(live=True, reconnect_min_s=0.1, reconnect_max_s=0.8)).start()
    t0, cpu0 = time.monotonic(), time.process_time()
    wait_until(lambda: caplog.text.count("opened but yielded no frame") >= 4, timeout=10)
    time.sleep(0.5)  # the backoff itself is what is measured here: attempts in a fixed span
    span, cpu = time.monotonic() - t0, time.process_time() - cpu0
    state, why = cam.state, cam.last_error
    cam.stop()
    attempts = caplog.text.count("opened but yielded no frame")
    delays = [float(m) for m in re.findall(r"yielded no frame \(attempt \d+\); retrying in ([0-9.]+) s", caplog.text)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8], delays  # doubling up to reconnect_max_s
    assert attempts <= span / 0.1 + 1 and state == "lost" and "no frame" in why
    assert cpu < 0.5 * span, f"{cpu:.2f} s CPU in {span:.2f} s: a busy loop"
    assert len(caplog.records) < 30


def test_a_replayed_folder_starts_over_without_a_word(tmp_path, caplog):
    """8c: a looping folder logged ~30 'reconnecting' lines a second."""
    folder = tmp_path / "loop"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((20, 30, 3), i * STEP, np.uint8))
    caplog.set_level(logging.DEBUG, logger="edge_ad.station.camera")
    cam = Camera(str(folder), fast_cfg(live=True, fps=200.0)).start()
    try:
        assert wait_until(lambda: cam.stats.reconnects >= 5, timeout=10)  # it went round five times
    finally:
        cam.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_stop_returns_while_a_stream_open_hangs():
    """4c2: a server that accepts and never answers holds OpenCV's open; stop() must not wait for it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    cam = Camera(f"rtsp://127.0.0.1:{server.getsockname()[1]}/stream", fast_cfg(open_timeout_s=30.0)).start()
    try:
        conn, _ = server.accept()  # the grabber is inside VideoCapture's open now
        t0 = time.monotonic()
        cam.stop()
        assert time.monotonic() - t0 < 1.5
        conn.close()
    finally:
        server.close()
