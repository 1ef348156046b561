"""One paho-mqtt client for the fleet's messages (station agent, controller, status, fleet page), set up from the
same MqttConfig a station's alarms use: host, TLS, per-station user and password."""

from __future__ import annotations

import threading
from typing import Any, Callable

from edge_ad.errors import EdgeAdError
from edge_ad.station.alarms.mqtt import resolve_password
from edge_ad.station.config import MqttConfig


def connect(cfg: MqttConfig, client_id: str, subscribe: tuple[str, ...] = (),
            on_message: Callable[[str, bytes, bool], None] | None = None,
            will: tuple[str, str] | None = None, wait_s: float | None = None) -> Any:
    """A started client (reconnects by itself, re-subscribes on every connect); with wait_s, waits for the
    first connection and raises a one-line error when there is none."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise EdgeAdError("the fleet's messages need paho-mqtt 2.x: pip install 'edge_ad[fleet]'") from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                         clean_session=True)
    connected = threading.Event()
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if cfg.username:
        client.username_pw_set(cfg.username, resolve_password(cfg))
    if cfg.tls:
        try:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None, keyfile=cfg.key_file or None)
        except (OSError, ValueError) as e:
            raise EdgeAdError(f"mqtt TLS setup failed (ca_file/cert_file/key_file): {e}") from None
        client.tls_insecure_set(cfg.tls_insecure)
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)

    def on_connect(c, _u, _f, reason, _p):
        if reason.is_failure:
            return
        for topic in subscribe:
            c.subscribe(topic, qos=1)
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_a: connected.clear()
    if on_message is not None:
        client.on_message = lambda _c, _u, msg: on_message(msg.topic, msg.payload, bool(msg.retain))
    client.connected = connected
    client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    client.loop_start()
    if wait_s is not None and not connected.wait(wait_s):
        client.loop_stop()
        raise EdgeAdError(f"no connection to the broker {cfg.host}:{cfg.port} within {wait_s:g} s")
    return client


def close(client: Any, timeout_s: float = 2.0) -> None:
    """Disconnect cleanly (no last will) and stop the network thread."""
    try:
        client.disconnect()
    finally:
        client.loop_stop()
