"""waitress (a threaded, pure-Python production WSGI server) running the Flask app in a background thread."""

from __future__ import annotations

import logging
import threading

from waitress import create_server, wasyncore

from edge_ad.station.config import StationConfig
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from edge_ad.station.web.app import create_app
from edge_ad.station.web.context import WebContext

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0  # closing waits this long for the server's threads
POLL_S = 0.2  # the socket loop checks this often whether to stop


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class WebServer:
    """Owns the listening socket and its thread; close() ends live streams first so the threads can exit."""

    def __init__(self, cfg: StationConfig, status: StationStatus, stop: StopFlag) -> None:
        self.ctx = WebContext.create(cfg, status, stop)
        web = cfg.web
        self._server = create_server(create_app(self.ctx), host=web.host, port=web.port, threads=web.threads,
                                     ident="edge_ad", clear_untrusted_proxy_headers=True)
        self.url = _url(web.host, self._server.effective_port)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="edge_ad-web", daemon=True)

    def _serve(self) -> None:
        """waitress's own run() loop, with a way out: sockets are closed here, in the thread that polls them."""
        server_map = self._server._map
        while not self._stopped.is_set():
            wasyncore.loop(timeout=POLL_S, map=server_map, use_poll=True, count=1)
        wasyncore.close_all(server_map)

    def start(self) -> WebServer:
        self._thread.start()
        web = self.ctx.cfg.web
        changes = "state changes need the token" if self.ctx.token else "state changes off (no web.token_file/token_env)"
        log.info("web view at %s (%s; pages %s; metrics at %smetrics)", self.url, changes,
                 "need the token" if web.protect_read else "open", self.url)
        if web.host not in ("127.0.0.1", "localhost", "::1") and not self.ctx.token:
            log.warning("web view serves %s without a token: anyone on the network can watch it", web.host)
        return self

    def close(self) -> None:
        """Live streams end their loops, worker threads finish, then the sockets close and the thread ends."""
        self.ctx.closing.set()
        self._server.task_dispatcher.shutdown(timeout=JOIN_TIMEOUT_S)
        self._stopped.set()
        self._thread.join(JOIN_TIMEOUT_S)
