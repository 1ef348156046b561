"""The Flask app: security settings and headers, the read guard (web.protect_read), and the routes (routes.py)."""

from __future__ import annotations

import os

from flask import Flask, jsonify, redirect, request, session, url_for

from edge_ad.station.web.auth import TOKEN_HEADER, bearer, token_ok
from edge_ad.station.web.context import WebContext
from edge_ad.station.web.metrics import make_registry

MAX_BODY_BYTES = 16 * 1024  # forms and JSON are tiny; nothing is uploaded
OPEN_ENDPOINTS = {"web.login", "web.healthz", "static"}  # reachable without the token even with protect_read
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def create_app(ctx: WebContext) -> Flask:
    from edge_ad.station.web.routes import blueprint

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.urandom(32),  # signs the read-only session cookie; a restart logs everyone out
        SESSION_COOKIE_NAME="edge_ad_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False,
    )
    app.extensions["edge_ad"] = ctx
    app.extensions["edge_ad_registry"] = make_registry(ctx.status)
    app.register_blueprint(blueprint)

    @app.before_request
    def guard_reading():
        if not ctx.cfg.web.protect_read or request.endpoint in OPEN_ENDPOINTS or session.get("reader"):
            return None
        given = request.headers.get(TOKEN_HEADER) or bearer(request.headers.get("Authorization"))
        if token_ok(given, ctx.token):
            return None
        if request.method == "GET" and request.endpoint in ("web.index", "web.alarm"):
            return redirect(url_for("web.login"))
        return jsonify(error="log in first: this station's pages need the token"), 401

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "static":
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    return app
