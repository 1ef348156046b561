"""The fleet page: every station, its version and state, and each rollout's progress, from the central broker's
retained messages, in the station web view's style. Read-only (no state changes), so it needs no token; bind it to
loopback or put it behind the plant's reverse proxy."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge_ad.errors import EdgeAdError
from edge_ad.fleet.config import PlantConfig
from edge_ad.fleet.status import COLUMNS, FleetView, station_line

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATION_CSS = HERE.parent / "station" / "web" / "static" / "style.css"  # one style for both pages
CSP = ("default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
REFRESH_S = 2.0  # the page re-reads /api/fleet this often
WEB_THREADS = 4


def fleet_doc(view: FleetView) -> dict:
    """What the page shows, as JSON: the station rows (the table's columns) and the rollouts."""
    stations = view.stations()
    return {"columns": list(COLUMNS), "stations": [station_line(n, d) for n, d in sorted(stations.items())],
            "rollouts": view.rollouts(), "time": time.time()}


def create_app(view: FleetView, plant: PlantConfig):
    try:
        from flask import Flask, jsonify, render_template, send_file
    except ImportError:
        raise EdgeAdError("the fleet page needs the web extra: pip install 'edge_ad[web]'") from None
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))

    @app.get("/")
    def index():
        return render_template("fleet.html", doc=fleet_doc(view), broker=f"{plant.broker.host}:{plant.broker.port}",
                               refresh_ms=int(REFRESH_S * 1000))

    @app.get("/api/fleet")
    def api():
        return jsonify(fleet_doc(view))

    @app.get("/style.css")
    def style():
        return send_file(STATION_CSS, mimetype="text/css")

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return app


def serve(plant: PlantConfig, host: str, port: int) -> None:
    """Serve until interrupted; the start-up line names the URL (port 0: a free one)."""
    try:
        from waitress.server import create_server
    except ImportError:
        raise EdgeAdError("the fleet page needs the web extra: pip install 'edge_ad[web]'") from None
    view = FleetView(plant.broker)
    server = create_server(create_app(view, plant), host=host, port=port, threads=WEB_THREADS)
    print(f"fleet page at http://{host}:{server.effective_port}/", flush=True)
    try:
        server.run()
    finally:
        view.close()
