"""Every URL of the web view. Reading is GET; the two changes (threshold, rollback) are POST with the token."""

from __future__ import annotations

import functools
import logging
import math
import mimetypes
import time
from typing import Any

import numpy as np

from flask import (Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request, send_file,
                   session, url_for)

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
from edge_ad.station.web import alarms as A
from edge_ad.station.web import parts as P
from edge_ad.station.web.auth import TOKEN_FIELD, TOKEN_HEADER, token_ok
from edge_ad.station.web.context import WebContext
from edge_ad.station.web.live import BOUNDARY, mjpeg
from edge_ad.station.web.metrics import exposition

log = logging.getLogger(__name__)
blueprint = Blueprint("web", __name__)

PLOT_POINTS = 600  # the score plot is downsampled to this many points (max per bucket: spikes stay visible)
WHO_CHARS = 64


def ctx() -> WebContext:
    return current_app.extensions["edge_ad"]


def fail(message: str, code: int) -> tuple[Response, int]:
    return jsonify(error=message), code


def _same_origin() -> bool:
    """A browser tells where a POST comes from; refuse other sites (the token check is the main defence)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


def needs_token(view):
    """State changes: POST only, same origin, the token in the X-Edge-Ad-Token header or a `token` form field."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        c = ctx()
        if c.token is None:
            return fail("changes are off on this station: no token configured (web.token_file or web.token_env)", 403)
        if not _same_origin():
            log.warning("web: refused %s from %s: cross-site request", request.path, request.remote_addr)
            return fail("cross-site request refused", 403)
        given = request.headers.get(TOKEN_HEADER) or request.form.get(TOKEN_FIELD)
        if not token_ok(given, c.token):
            log.warning("web: refused %s from %s: token %s", request.path, request.remote_addr,
                        "wrong" if given else "missing")
            return fail("token missing or wrong", 401 if not given else 403)
        return view(*args, **kwargs)

    return wrapped


def _arg(name: str) -> Any:
    body = request.get_json(silent=True) if request.is_json else request.form
    return (body or {}).get(name)


def _who() -> str:
    who = str(_arg("who") or "").strip()
    if not who or len(who) > WHO_CHARS or not who.isprintable():
        raise EdgeAdError(f"who: your name, 1 to {WHO_CHARS} printable characters, is recorded with the change")
    return f"{who} (web, {request.remote_addr})"


# ----------------------------------------------------------------------------------------------- pages


@blueprint.get("/")
def index():
    c = ctx()
    return render_template("index.html", station=c.cfg.station, part=c.cfg.part, protect_read=c.cfg.web.protect_read)


@blueprint.get("/alarm/<name>")
def alarm(name: str):
    c = ctx()
    folder = A.event_dir(c.cfg.evidence.dir, name)
    if folder is None:
        abort(404)
    rec = A.event_record(folder)
    original = A.original_name(folder)
    return render_template("alarm.html", name=name, rec=rec, original=original, station=c.cfg.station,
                           part=c.cfg.part)


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    c = ctx()
    if request.method == "POST":
        if _same_origin() and token_ok(request.form.get(TOKEN_FIELD), c.token):
            session.clear()
            session["reader"] = True
            return redirect(url_for("web.index"))
        log.warning("web: failed log-in from %s", request.remote_addr)
        return render_template("login.html", station=c.cfg.station, error="wrong token"), 403
    return render_template("login.html", station=c.cfg.station, error="")


@blueprint.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("web.login" if ctx().cfg.web.protect_read else "web.index"))


# ----------------------------------------------------------------------------------------------- live view


@blueprint.get("/live.mjpg")
def live_stream():
    c = ctx()
    if not c.viewers.acquire(blocking=False):
        return fail(f"too many live viewers (web.live_clients: {c.cfg.web.live_clients})", 503)

    def stream():
        try:
            yield from mjpeg(c.live, c.closing)
        finally:
            c.viewers.release()

    return Response(stream(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")


@blueprint.get("/live.jpg")
def live_still():
    seq, jpeg = ctx().live.latest()
    if jpeg is None:
        return Response(status=204)
    return Response(jpeg, mimetype="image/jpeg", headers={"X-Frame-Seq": str(seq)})


# ----------------------------------------------------------------------------------------------- JSON


@blueprint.get("/api/status")
def status():
    c = ctx()
    s = c.status.snapshot()
    live = c.status.live
    s.update(ok=s["frames"] - s["anomalous"], uptime_s=time.time() - s["started"], readiness=P.readiness(c),
             verdict=None if live.image is None else ("anomaly" if live.anomaly else "ok"),
             changes_off=P.changes_off(c), plot_minutes=c.cfg.web.plot_minutes,
             healthy=c.status.healthy(c.cfg.web.health_max_age_s), now=time.time())
    return jsonify(s)


@blueprint.get("/api/scores")
def scores():
    c = ctx()
    now = time.time()
    span = c.cfg.web.plot_minutes * 60.0
    points = c.status.scores(since=now - span)
    return jsonify(now=now, span_s=span, threshold=c.status.threshold, points=downsample(points, PLOT_POINTS))


def downsample(points: list[tuple[float, float]], n: int) -> list[list[float]]:
    """At most n points, the highest score of each run of consecutive ones (spikes stay visible), in numpy."""
    if len(points) <= n:
        return [list(p) for p in points]
    a = np.asarray(points, dtype=np.float64)
    step = math.ceil(len(a) / n)
    padded = np.concatenate([a[:, 1], np.full(-len(a) % step, -np.inf)]).reshape(-1, step)
    at = np.argmax(padded, axis=1) + np.arange(len(padded)) * step  # a padded slot never wins: rows hold a point
    return a[at].tolist()


@blueprint.get("/api/alarms")
def alarms():
    c = ctx()
    rows = A.alarm_rows(c.cfg.evidence.dir, c.cfg.evidence.enabled, c.status, c.cfg.web.alarms_shown)
    return jsonify(total=c.status.alarms, rows=rows)


@blueprint.get("/api/parts")
def parts():
    return jsonify(P.versions(ctx()))


def _running() -> str:
    """The version the operator was looking at (the page sends the one it shows as running)."""
    raw = _arg("running")
    if raw is None:
        raise EdgeAdError("running: the version the page showed as running is required (reload the page)")
    return str(raw)


def _confirmed() -> bool:
    return str(_arg("confirm") or "").lower() in ("1", "true", "yes", "on")


@blueprint.post("/api/threshold")
@needs_token
def set_threshold():
    try:
        raw = _arg("threshold")
        threshold = float(raw) if raw is not None and not isinstance(raw, bool) else float("nan")
        version = P.change_threshold(ctx(), threshold, _who(), _running(), _confirmed())
    except B.NeedsConfirmation as e:
        return jsonify(error=str(e), confirm_needed=True), 409
    except (EdgeAdError, ValueError, TypeError) as e:
        return fail(str(e) if isinstance(e, EdgeAdError) else f"threshold: not a number: {raw!r}", 400)
    return jsonify(version=version, threshold=threshold, reload="requested")


@blueprint.post("/api/rollback")
@needs_token
def rollback():
    try:
        raw = _arg("version")
        cur = _arg("current")
        current = None if cur in (None, "") else int(str(cur).lstrip("v"))
        version = P.rollback(ctx(), int(str(raw).lstrip("v")), _who(), _running(), current)
    except (EdgeAdError, ValueError, TypeError) as e:
        return fail(str(e) if isinstance(e, EdgeAdError) else f"version: not a version number: {raw!r}", 400)
    return jsonify(version=version, reload="requested")


@blueprint.post("/api/trigger")
@needs_token
def trigger():
    """Triggered mode: one part to inspect now (optional part_id); its result comes on MQTT, OPC UA, /api/results."""
    from edge_ad.station.trigger import clean_part_id

    c = ctx()
    if c.triggers is None:
        return fail("triggered mode is off on this station (trigger.enabled)", 409)
    if not c.cfg.trigger.http:
        return fail("HTTP triggers are off on this station (trigger.http)", 403)
    try:
        part_id = clean_part_id(_arg("part_id"))
    except ValueError as e:
        return fail(str(e), 400)
    trig = c.triggers.fire("http", part_id)
    return jsonify(seq=trig.seq, part_id=trig.part_id, time=trig.time, queued=not trig.error, error=trig.error)


@blueprint.get("/api/results")
def results():
    """Triggered mode: counters, trigger-to-result latency and the newest part results, newest first."""
    c = ctx()
    s = c.status.snapshot()
    return jsonify(mode=s["mode"], triggers=s.get("triggers", 0), ok=s["parts_ok"], nok=s["parts_nok"],
                   error=s["parts_error"], latency_ms_p50=s["part_latency_ms_p50"],
                   latency_ms_p99=s["part_latency_ms_p99"], rows=c.status.recent_results())


# ----------------------------------------------------------------------------------------------- evidence


@blueprint.get("/evidence/<name>/<file>")
def evidence(name: str, file: str):
    c = ctx()
    folder = A.event_dir(c.cfg.evidence.dir, name)
    if folder is None:
        abort(404)
    if file == "thumb.jpg":
        jpeg = A.thumbnail(str(folder))
        return Response(jpeg, mimetype="image/jpeg") if jpeg else abort(404)
    f = A.open_event_file(folder, file)  # a regular file inside the event folder, opened without following links
    if f is None:
        abort(404)
    return send_file(f, mimetype=mimetypes.guess_type(file)[0] or "application/octet-stream", download_name=file,
                     max_age=3600)


# ----------------------------------------------------------------------------------------------- machines


@blueprint.get("/healthz")
def healthz():
    c = ctx()
    ok = c.status.healthy(c.cfg.web.health_max_age_s)
    reason = "ok" if ok else (c.status.fault or f"no frame inspected in the last {c.cfg.web.health_max_age_s:g} s "
                              f"(state {c.status.state}, camera {c.status.camera})")
    return Response(reason + "\n", status=200 if ok else 503, mimetype="text/plain")


@blueprint.get("/metrics")
def metrics():
    body, content_type = exposition(current_app.extensions["edge_ad_registry"])
    return Response(body, content_type=content_type)
