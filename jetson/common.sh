#!/usr/bin/env bash
# Shared by jetson/install.sh and jetson/uninstall.sh: where things go, and how steps are run or printed.
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file
set -euo pipefail  # as in the scripts that source it

PREFIX=/opt/edge_ad
VENV="$PREFIX/venv"
CONF_DIR=/etc/edge_ad
DATA_DIR=/var/lib/edge_ad
LOG_DIR=/var/log/edge_ad
SERVICE_USER=edge_ad
SERVICE_NAME=edge_ad.service
UNIT_DIR=/etc/systemd/system
UDEV_RULE=99-edge-ad-gpio.rules
UDEV_DIR=/etc/udev/rules.d
DRY_RUN=0

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Every command that changes the system goes through run: printed in dry-run, executed otherwise.
run() {
    if ((DRY_RUN)); then
        printf '    would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}
