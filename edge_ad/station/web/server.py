"""waitress (a threaded, pure-Python production WSGI server) running the Flask app in a background thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from edge_ad.station.config import LOOPBACK_HOSTS, StationConfig
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from edge_ad.station.web.app import MAX_BODY_BYTES, create_app
from edge_ad.station.web.context import WebContext

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0  # closing waits this long for the server's threads
POLL_S = 0.2  # the socket loop checks this often whether to stop
MAX_HEADER_BYTES = 32 * 1024  # request line + headers (a cookie and the token fit many times over)
CLEANUP_S = 1  # idle connections are looked for this often (waitress's cleanup_interval, whole seconds)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class BoundedServer(TcpWSGIServer):
    """waitress's server with a connection limit that cannot be held: at the limit a new connection takes the place
    of the oldest one that has no request running (idle keep-alives, slow or never-finished headers), so a few
    idle clients (or a slowloris) never lock out /healthz; only when every connection is busy is a new one closed."""

    refused = 0  # connections closed at once because every slot was busy
    evicted = 0  # connections closed to make room

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:  # waitress's idle sweep (channel_timeout), as in its own readable()
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return self.accepting  # never stops listening: handle_accept makes room instead

    def handle_accept(self) -> None:
        channels = list(self.active_channels.values())
        if len(channels) >= self.adj.connection_limit:
            idle = [c for c in channels if not c.requests and not c.total_outbufs_len and c.connected]
            if not idle:
                try:
                    conn, _ = self.accept() or (None, None)
                except OSError:
                    return
                if conn is not None:
                    conn.close()
                    self.refused += 1
                return
            min(idle, key=lambda c: c.creation_time).handle_close()
            self.evicted += 1
        super().handle_accept()


def _servers(app, web, sock_map: dict) -> list[BoundedServer]:
    """One BoundedServer per address the host resolves to, sharing one socket map and one pool of threads."""
    adj = Adjustments(host=web.host, port=web.port, threads=web.threads, ident="edge_ad",
                      clear_untrusted_proxy_headers=True, connection_limit=web.max_connections,
                      channel_timeout=max(1, round(web.idle_timeout_s)), cleanup_interval=CLEANUP_S,
                      max_request_body_size=MAX_BODY_BYTES, max_request_header_size=MAX_HEADER_BYTES)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    listen = adj.listen if web.port else adj.listen[:1]  # port 0: one free port, not one per address
    return [BoundedServer(app, sock_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in listen]


class WebServer:
    """Owns the listening sockets and their thread; close() ends live streams first so the threads can exit."""

    def __init__(self, cfg: StationConfig, status: StationStatus, stop: StopFlag, triggers: Any = None) -> None:
        self.ctx = WebContext.create(cfg, status, stop, triggers)
        web = cfg.web
        self._map: dict = {}
        self.servers = _servers(create_app(self.ctx), web, self._map)
        self._server = self.servers[0]
        self.url = _url(web.host, self._server.effective_port)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="edge_ad-web", daemon=True)

    def _serve(self) -> None:
        """waitress's own run() loop, with a way out: sockets are closed here, in the thread that polls them."""
        server_map = self._map
        while not self._stopped.is_set():
            wasyncore.loop(timeout=POLL_S, map=server_map, use_poll=True, count=1)
        wasyncore.close_all(server_map)

    def start(self) -> WebServer:
        self._thread.start()
        web = self.ctx.cfg.web
        changes = "state changes need the token" if self.ctx.token else "state changes off (no web.token_file/token_env)"
        log.info("web view at %s (%s; pages %s; metrics at %smetrics)", self.url, changes,
                 "need the token" if web.protect_read else "open", self.url)
        if web.host not in LOOPBACK_HOSTS and not self.ctx.token:
            log.warning("web view serves %s without a token: anyone on the network can watch it", web.host)
        return self

    def close(self) -> None:
        """Live streams end their loops, worker threads finish, then the sockets close and the thread ends."""
        self.ctx.closing.set()
        self._server.task_dispatcher.shutdown(timeout=JOIN_TIMEOUT_S)
        self._stopped.set()
        self._thread.join(JOIN_TIMEOUT_S)
