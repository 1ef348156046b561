"""Shared test helpers (not a test module): wait on a condition with a deadline, and a recording MQTT subscriber.

paho is imported only when a Subscriber is made, so tests that just wait need no MQTT client library.
"""

from __future__ import annotations

import json
import threading
import time
import uuid


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; returns its last value as a bool.

    Fast when the machine is idle (returns as soon as the condition holds), still passes when it is loaded
    (the deadline is generous); callers assert the result, so a condition that never holds fails the test.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


SYNC_KEY = "_edge_ad_test_sync"


class Subscriber:
    """A real paho client that records what arrives; re-subscribes after a broker restart.

    `sync(broker, topic)` is a barrier: it publishes a marker from another client and waits for it, so every
    message the broker had accepted on that topic before the call has reached this subscriber when it returns
    (the broker delivers to one subscriber in order). Markers are not recorded in `messages`.
    """

    def __init__(self, broker, topic: str, client_id: str = "", clean: bool = True, tls: dict | None = None,
                 auth: tuple[str, str] | None = None):
        import paho.mqtt.client as mqtt

        self.messages: list = []  # paho MQTTMessage, in arrival order
        self.lock = threading.Lock()
        self.topic = topic
        self._tls, self._auth = tls, auth
        self._markers: set[str] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if tls:
            self.client.tls_set(**tls)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscriber did not subscribe"

    def _on_message(self, _c, _u, msg):
        try:
            marker = json.loads(msg.payload).get(SYNC_KEY)
        except (ValueError, AttributeError):
            marker = None
        with self.lock:
            if marker is not None:
                self._markers.add(marker)
            else:
                self.messages.append(msg)

    def payloads(self, topic: str | None = None) -> list[dict]:
        with self.lock:
            return [json.loads(m.payload) for m in self.messages if topic is None or m.topic == topic]

    def _saw_marker(self, token: str) -> bool:
        with self.lock:
            return token in self._markers

    def sync(self, broker, topic: str, timeout: float = 5.0) -> None:
        """Wait until everything the broker accepted on `topic` before now has arrived here (see the class doc)."""
        import paho.mqtt.client as mqtt

        token = uuid.uuid4().hex
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge_ad-test-sync-{token[:8]}")
        if self._tls:
            pub.tls_set(**self._tls)
        if self._auth:
            pub.username_pw_set(*self._auth)
        pub.connect(broker.host, broker.port, keepalive=5)
        pub.loop_start()
        try:
            info = pub.publish(topic, json.dumps({SYNC_KEY: token}), qos=1)
            info.wait_for_publish(timeout)
            assert info.is_published(), "sync marker was not acknowledged by the broker"
            assert wait_until(lambda: self._saw_marker(token), timeout), "sync marker did not reach the subscriber"
        finally:
            pub.disconnect()
            pub.loop_stop()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class SmallDisk:
    """A real filesystem of `size_kb` (tmpfs, mounted as root) that tests fill up: a full disk, not a mock.

    `fill()` takes every free byte; `free_up()` gives them back. PermissionError where mounting is not allowed.
    """

    def __init__(self, path, size_kb: int = 512):
        import subprocess

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=1777", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise PermissionError(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()[:120]}")
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f:
            for size in (65536, 4096, 512, 1):  # big blocks, then the last few bytes
                try:
                    while f.write(b"\0" * size):
                        pass
                except OSError:
                    pass

    def free_up(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def video_scores(onnx, video) -> list[float]:
    """The station detector's score of every frame of a video file, in order (the threshold fixtures' input)."""
    import cv2

    from edge_ad.runtime.detector import open_detector

    det = open_detector(onnx)
    cap = cv2.VideoCapture(str(video))
    scores = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        scores.append(det.detect(f).score)
    return scores
