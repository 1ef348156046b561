"""The token that guards state changes (and, by config, reading): read once, never logged, compared in constant time.

CSRF: a change needs the token in a header or a form field, which another site cannot read or guess, and only a
POST changes anything; the read-only session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from edge_ad.errors import EdgeAdError
from edge_ad.station.config import WebConfig

TOKEN_HEADER = "X-Edge-Ad-Token"
TOKEN_FIELD = "token"
MIN_TOKEN_CHARS = 16


def load_token(web: WebConfig) -> str | None:
    """The token from web.token_env or web.token_file; None when neither is set."""
    if web.token_env:
        token = os.environ.get(web.token_env, "").strip()
        where = f"web.token_env: environment variable {web.token_env}"
        if not token:
            raise EdgeAdError(f"{where} is not set or empty")
    elif web.token_file:
        where = f"web.token_file {web.token_file}"
        try:
            lines = Path(web.token_file).read_text().splitlines()
        except OSError as e:
            raise EdgeAdError(f"{where}: cannot read it: {e.strerror}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise EdgeAdError(f"{where}: the first line is empty")
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise EdgeAdError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters "
                          "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


def token_ok(given: str | None, token: str | None) -> bool:
    """Constant-time comparison; no token configured never matches."""
    if not token or not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header (how Prometheus sends one)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None
