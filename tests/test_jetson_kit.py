"""jetson/ install kit: shell scripts lint clean, dry runs print every step and change nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JETSON = ROOT / "jetson"
SCRIPTS = sorted(JETSON.glob("*.sh"))
L4T_RELEASE = Path("/etc/nv_tegra_release")
# What a real install would create; a dry run must leave each of them as it found it.
INSTALLED_PATHS = [
    Path("/opt/edge_ad"),
    Path("/etc/edge_ad"),
    Path("/var/lib/edge_ad"),
    Path("/var/log/edge_ad"),
    Path("/etc/systemd/system/edge_ad.service"),
    Path("/etc/udev/rules.d/99-edge-ad-gpio.rules"),
]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", "-u", name], capture_output=True).returncode == 0


def _system_state() -> tuple:
    return tuple(p.exists() for p in INSTALLED_PATHS) + (_user_exists("edge_ad"),)


def test_scripts_present_and_executable():
    assert {p.name for p in SCRIPTS} >= {"install.sh", "uninstall.sh"}
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = _run("-n", str(script))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install -y shellcheck)")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_dry_run_prints_every_step_and_changes_nothing():
    before = _system_state()
    proc = _run("jetson/install.sh", "--dry-run", "--force")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "dry run: nothing will be changed" in out
    assert "-m venv --system-site-packages /opt/edge_ad/venv" in out
    assert re.search(r"pip install -c \S*/constraints\.txt \S*\\\[jetson\\,web\\,opcua\\,fleet\\\]", out), \
        "installs edge_ad[jetson,web,opcua,fleet] from the repo, pinned by constraints.txt"
    assert "/etc/edge_ad/web.token" in out and "web view (off by default)" in out
    assert "numpy\\<2" in out
    assert re.search(r"usermod -aG video\\?,gpio\S* edge_ad", out)
    assert "useradd --system" in out or "user edge_ad exists" in out
    assert "/etc/udev/rules.d/99-edge-ad-gpio.rules" in out
    for folder in ("/etc/edge_ad", "/var/lib/edge_ad", "/var/log/edge_ad"):
        assert folder in out
    assert "/etc/edge_ad/station.yaml" in out
    assert "would run: systemctl daemon-reload" in out and "would run: systemctl enable edge_ad.service" in out
    assert "systemctl restart" not in out and "enabled, not started" in out
    assert _system_state() == before


def test_install_dry_run_start_flag():
    proc = _run("jetson/install.sh", "--dry-run", "--force", "--start")
    assert proc.returncode == 0, proc.stderr
    assert "would run: systemctl restart edge_ad.service" in proc.stdout


@pytest.mark.skipif(L4T_RELEASE.exists(), reason="this machine is a Jetson")
def test_install_refuses_a_non_jetson_without_force():
    before = _system_state()
    proc = _run("jetson/install.sh", "--dry-run")
    assert proc.returncode == 1
    assert "not a Jetson" in proc.stderr and "--force" in proc.stderr
    assert _system_state() == before


def test_unknown_option_is_rejected():
    for script in ("jetson/install.sh", "jetson/uninstall.sh"):
        proc = _run(script, "--frobnicate")
        assert proc.returncode == 2 and "unknown option" in proc.stderr


def test_uninstall_dry_run_keeps_data_unless_purge():
    before = _system_state()
    keep = _run("jetson/uninstall.sh", "--dry-run")
    assert keep.returncode == 0, keep.stderr
    assert "would run: rm -rf /opt/edge_ad" in keep.stdout
    assert "/etc/udev/rules.d/99-edge-ad-gpio.rules" in keep.stdout
    assert "kept /etc/edge_ad" in keep.stdout and "userdel" not in keep.stdout
    purge = _run("jetson/uninstall.sh", "--dry-run", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert "rm -rf /etc/edge_ad /var/lib/edge_ad /var/log/edge_ad" in purge.stdout
    assert "would run: userdel edge_ad" in purge.stdout
    assert _system_state() == before


def test_udev_rule_lines_are_well_formed():
    rules = (JETSON / "99-edge-ad-gpio.rules").read_text().splitlines()
    pair = re.compile(r'^[A-Z_]+(\{[^}]*\})?(==|!=|=|\+=|:=)"[^"]*"$')
    keys = []
    for line in rules:
        if not line.strip() or line.startswith("#"):
            continue
        for item in line.split(", "):
            assert pair.match(item.strip()), f"bad udev key/value: {item!r}"
            keys.append(item.split("=")[0].rstrip("!+:"))
    assert 'GROUP="gpio"' in "".join(rules) and 'KERNEL=="gpiochip[0-9]*"' in "".join(rules)
    assert {"SUBSYSTEM", "KERNEL", "GROUP", "MODE", "PROGRAM"} <= set(keys)


def test_power_notes_cover_the_tools():
    text = (JETSON / "POWER.md").read_text()
    for word in ("nvpmodel -q", "nvpmodel -m", "jetson_clocks", "tegrastats", "benchmarks/engine.py", "--dla", "DLA"):
        assert word in text
