"""MQTT alarm sink (paho-mqtt 2.x): QoS 1 events through an on-disk queue, retained status, last will.

Topics read from general to specific: `<prefix>/<station>/<part>/event` carries one JSON object per
alarm; `<prefix>/<station>/<part>/status` is retained: "online" on connect, "fault" with the reason while
the station cannot inspect, and "offline" as the last will. `on_event` only appends to the disk queue; a
sender thread publishes one event at a time, in order, and deletes it from the queue only after the broker's
PUBACK. paho reconnects with backoff and re-sends the unacknowledged event itself, so the loop never waits for
the network.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edge_ad import __version__
from edge_ad.station.alarms.base import AlarmEvent
from edge_ad.station.alarms.queue import DiskQueue
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import MqttConfig
from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise EdgeAdError("mqtt.enabled needs paho-mqtt 2.x: pip install 'paho-mqtt>=2,<3'") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise EdgeAdError("paho-mqtt 1.x found; edge_ad needs 2.x: pip install -U 'paho-mqtt>=2,<3'")
    return mqtt


def resolve_password(cfg: MqttConfig) -> str | None:
    """The broker password from an environment variable or a file; errors name the source, never the value."""
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise EdgeAdError(f"mqtt.password_env: environment variable {cfg.password_env} is not set")
        return value
    if cfg.password_file:
        try:
            lines = Path(cfg.password_file).read_text().splitlines()
        except OSError as exc:
            raise EdgeAdError(f"mqtt.password_file: cannot read {cfg.password_file}: {exc.strerror}") from None
        return lines[0] if lines else ""
    return None


def topics(cfg: MqttConfig, station: str, part: str) -> tuple[str, str]:
    """(event topic, status topic) for one station and part."""
    base = f"{cfg.topic_prefix}/{station}/{part}"
    return f"{base}/event", f"{base}/status"


class MqttSink:
    """Publishes alarm events; safe to call from the inspection loop while the broker is down."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, station: str, part: str, queue: DiskQueue | None = None) -> None:
        mqtt = _paho()
        self.cfg = cfg
        self.station = station
        self.part = part
        self.event_topic, self.status_topic = topics(cfg, station, part)
        self.base_topic = self.event_topic.rsplit("/", 1)[0]
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}  # topic -> handler (triggered mode's commands)
        self.queue = queue if queue is not None else DiskQueue(cfg.queue_dir, cfg.queue_max, cfg.queue_fsync)
        self.delivered = 0
        self.connected = threading.Event()
        self._cond = threading.Condition()
        # the retained status: published on connect and on every fault change, one at a time. Its own lock, never
        # _cond: publish() takes paho's message lock, under which _on_publish takes _cond
        self._status_lock = threading.Lock()
        self._status_live = False
        self._inflight: tuple[int, int, float] | None = None  # (mid, queue seq, sent at)
        self._publishing = False
        self._early_acks: set[int] = set()
        self._closing = False
        self._failures = 0
        self._fault = ""  # why the station cannot inspect ("" while it can): the retained status says so
        self._down_since = time.monotonic()  # no connection since then (None while connected)

        client_id = cfg.client_id or f"edge_ad-{station}-{part}"
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        self._client.will_set(self.status_topic, self._status_payload("offline", ""), qos=1, retain=True)
        if cfg.username:
            self._client.username_pw_set(cfg.username, resolve_password(cfg))
        if cfg.tls:
            try:
                self._client.tls_set(
                    ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None, keyfile=cfg.key_file or None
                )
            except (OSError, ValueError) as exc:
                raise EdgeAdError(f"mqtt TLS setup failed (ca_file/cert_file/key_file): {exc}") from None
            self._client.tls_insecure_set(cfg.tls_insecure)
        self._client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="edge_ad-mqtt-sender", daemon=True)
        self._sender.start()

    # --- the Sink interface -------------------------------------------------------------------
    def on_event(self, event: AlarmEvent) -> None:
        """Queue the event on disk and return; the sender thread delivers it."""
        self.queue.push({"topic": self.event_topic, "payload": event.to_dict()})
        with self._cond:
            self._cond.notify_all()

    def on_result(self, result: Any) -> None:
        """Triggered mode: one message per part on <prefix>/<station>/<part>/result, through the same disk queue."""
        self.queue.push({"topic": f"{self.base_topic}/result", "payload": result.to_dict()})
        with self._cond:
            self._cond.notify_all()

    def subscribe(self, name: str, handler: Callable[[bytes], None]) -> str:
        """Call handler(payload) for messages on <prefix>/<station>/<part>/<name> (subscribed again on every
        connect, QoS 1); returns the topic. Handlers run in paho's network thread and must return quickly."""
        topic = f"{self.base_topic}/{name}"
        self._subscriptions[topic] = handler
        if self.connected.is_set():
            self._client.subscribe(topic, qos=1)
        return topic

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        handler = self._subscriptions.get(msg.topic)
        if handler is None:
            return
        try:
            handler(msg.payload)
        except Exception:  # noqa: BLE001 - a bad command must not kill paho's network thread
            log.exception("mqtt: handling a message on %s failed", msg.topic)

    def set_active(self, active: bool) -> None:
        pass  # events carry the alarm; the level is for GPIO

    def set_fault(self, reason: str) -> None:
        """The retained status becomes `fault` with the reason (or `online` again); sent now or on connect."""
        with self._status_lock:  # else a fault set while _on_connect publishes is never sent ("online" stays)
            self._fault = reason
            if self._status_live:
                self._client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)

    def health(self) -> dict[str, Any]:
        """Broker state and queue depth for the station status."""
        return {"broker": "connected" if self.connected.is_set() else "disconnected", "queue_depth": len(self.queue),
                "queue_write_errors": self.queue.write_errors}

    def close(self, timeout: float | None = None) -> None:
        """Give queued events `timeout` seconds to go out, mark the station offline, disconnect."""
        timeout = self.cfg.close_timeout_s if timeout is None else timeout
        self.flush(timeout)  # also waits for a connection that is still being made
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._sender.join(timeout=2.0)
        with self._status_lock:  # the last status: no fault set after this replaces "offline"
            live, self._status_live = self._status_live, False
            info = self._client.publish(self.status_topic, self._status_payload("offline", ""), qos=1,
                                        retain=True) if live and self.connected.is_set() else None
        if info is not None:
            try:
                info.wait_for_publish(timeout=max(timeout, 0.5))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        if len(self.queue):
            log.warning("mqtt: %d event(s) left in %s; they are sent on the next start", len(self.queue),
                        self.queue.path)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event is acknowledged (or timeout), connecting first if need be; True when
        the queue is empty. Returns as soon as it is, so a generous timeout costs nothing when the broker is up."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.queue) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(deadline - time.monotonic(), 0)))
        return not len(self.queue)

    # --- paho callbacks (network thread) --------------------------------------------------------
    def _status_payload(self, state: str | None = None, reason: str | None = None) -> str:
        """Retained status: `state` (default: fault or online from the station's health) and its reason."""
        reason = self._fault if reason is None else reason
        state = state or ("fault" if reason else "online")
        now = time.time()
        doc = {"state": state, "station": self.station, "part": self.part, "edge_ad_version": __version__,
               "time": now, "time_iso": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")}
        if reason:
            doc["reason"] = reason
        return json.dumps(doc)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("mqtt: broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        log.info("mqtt: connected to %s:%d%s", self.cfg.host, self.cfg.port,
                 f" after {self._failures} failed attempt(s)" if self._failures else "")
        self._failures = 0
        with self._status_lock:
            client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)
            self._status_live = True
        for topic in list(self._subscriptions):
            client.subscribe(topic, qos=1)
        with self._cond:
            self._down_since = None
            self.connected.set()
            if self._inflight is not None:  # paho re-sends it; restart its ack clock
                mid, seq, _ = self._inflight
                self._inflight = (mid, seq, time.monotonic())
            self._cond.notify_all()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._status_lock:
            self._status_live = False
        self.connected.clear()
        with self._cond:
            self._down_since = self._down_since or time.monotonic()
        if not self._closing:
            log_limited(log, logging.WARNING, f"mqtt-down:{self.cfg.host}:{self.cfg.port}",
                        "mqtt: disconnected from %s:%d (%s); reconnecting with backoff up to %g s, "
                        "%d event(s) queued", self.cfg.host, self.cfg.port, reason, self.cfg.reconnect_max_s,
                        len(self.queue))

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._failures += 1
        log_limited(log, logging.WARNING, f"mqtt-down:{self.cfg.host}:{self.cfg.port}",
                    "mqtt: cannot reach broker %s:%d (attempt %d); retrying with backoff up to %g s",
                    self.cfg.host, self.cfg.port, self._failures, self.cfg.reconnect_max_s)

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        # Runs while paho holds its outgoing-message lock: never wait here on anything the sender holds
        # while it calls publish() (the sender calls publish() without holding _cond).
        seq = None
        with self._cond:
            if self._inflight is not None and self._inflight[0] == mid:
                seq = self._inflight[1]
                self._inflight = None
            elif self._publishing:  # PUBACK raced ahead of publish() returning its mid
                self._early_acks.add(mid)
            if seq is not None:
                self.queue.remove(seq)
                self.delivered += 1
            self._cond.notify_all()

    # --- sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                self._check_ack_timeout()
                self._check_connect_timeout()
                if not (self.connected.is_set() and self._inflight is None and len(self.queue)):
                    self._cond.wait(0.5)
                    continue
                self._publishing = True
            item = self.queue.peek()
            if item is None:
                with self._cond:
                    self._publishing = False
                continue
            seq, data = item
            try:
                info = self._client.publish(data["topic"], json.dumps(data["payload"]), qos=self.cfg.qos)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("mqtt: dropping malformed queued event #%d: %s", seq, exc)
                self.queue.remove(seq)
                with self._cond:
                    self._publishing = False
                continue
            with self._cond:
                self._publishing = False
                acked = info.mid in self._early_acks or self.cfg.qos == 0
                self._early_acks.clear()
                if acked:
                    self.queue.remove(seq)
                    self.delivered += 1
                    self._cond.notify_all()
                else:
                    self._inflight = (info.mid, seq, time.monotonic())

    def _check_connect_timeout(self) -> None:
        """A broker that accepts TCP but never answers (no CONNACK) is not silent: warn at a bounded rate."""
        down = self._down_since
        if down is None or time.monotonic() - down < self.cfg.connect_timeout_s:
            return
        log_limited(log, logging.WARNING, f"mqtt-silent:{self.cfg.host}:{self.cfg.port}", "mqtt: no connection to "
                    "broker %s:%d for %.0f s (unreachable, refusing, or not answering); %d event(s) queued in %s",
                    self.cfg.host, self.cfg.port, time.monotonic() - down, len(self.queue), self.queue.path)

    def _check_ack_timeout(self) -> None:
        """Safety net: an event the broker never acknowledged is published again (at-least-once)."""
        if self._inflight is None or not self.connected.is_set():
            return
        mid, seq, sent = self._inflight
        if time.monotonic() - sent > self.cfg.ack_timeout_s:
            log.warning("mqtt: no PUBACK for event #%d after %.0f s; publishing it again", seq,
                        self.cfg.ack_timeout_s)
            self._inflight = None
