#!/usr/bin/env bash
# Remove what jetson/install.sh installed.
#
#   sudo jetson/uninstall.sh            # service, unit, udev rule and venv; keeps config, data, logs, user
#   sudo jetson/uninstall.sh --purge    # also /etc/edge_ad, /var/lib/edge_ad, /var/log/edge_ad and the user
#   jetson/uninstall.sh --dry-run [--purge]
#
# The 'gpio' group stays: other GPIO users on this Jetson may rely on it.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$SCRIPT_DIR/common.sh"   # install locations, say/warn/die/run
PURGE=0

usage() {
    cat <<USAGE
usage: $(basename "$0") [--dry-run] [--purge]
  --dry-run  print what would be done, change nothing
  --purge    also delete configuration, data (part bundles, engines, recordings), logs and the user
USAGE
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done


remove_service() {
    say "service $SERVICE_NAME"
    if [[ -e "$UNIT_DIR/$SERVICE_NAME" ]] || ((DRY_RUN)); then
        if command -v systemctl >/dev/null; then
            # Stop before removing; a unit that is already stopped or disabled is fine.
            run systemctl disable --now "$SERVICE_NAME" || true
        fi
        run rm -f "$UNIT_DIR/$SERVICE_NAME"
        if command -v systemctl >/dev/null; then
            run systemctl daemon-reload
        fi
    else
        say "not installed"
    fi
}

remove_udev_rule() {
    say "udev rule $UDEV_DIR/$UDEV_RULE"
    run rm -f "$UDEV_DIR/$UDEV_RULE"
    if command -v udevadm >/dev/null || ((DRY_RUN)); then
        run udevadm control --reload-rules
    fi
}

remove_files() {
    say "program and venv in $PREFIX"
    run rm -rf "${PREFIX:?}"
    if ((PURGE)); then
        say "purging configuration, data and logs"
        run rm -rf "${CONF_DIR:?}" "${DATA_DIR:?}" "${LOG_DIR:?}"
        if id -u "$SERVICE_USER" >/dev/null 2>&1 || ((DRY_RUN)); then
            run userdel "$SERVICE_USER"
        fi
    else
        say "kept $CONF_DIR, $DATA_DIR, $LOG_DIR and user $SERVICE_USER (--purge removes them)"
    fi
}

main() {
    ((DRY_RUN)) && say "dry run: nothing will be changed"
    if ((!DRY_RUN)) && [[ $EUID -ne 0 ]]; then
        die "run as root: sudo $0"
    fi
    remove_service
    remove_udev_rule
    remove_files
    say "done"
}

main
