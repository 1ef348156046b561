#!/usr/bin/env bash
# Install edge_ad as a systemd service on a Jetson (JetPack 6, L4T R36).
#
#   sudo jetson/install.sh [--start] [--force]
#   jetson/install.sh --dry-run [--force]     # print every step, change nothing (no root needed)
#
# Creates a venv that sees JetPack's cv2 (GStreamer) and TensorRT, a system user, the GPIO udev rule,
# config/data/log folders, a token for the web view and the enabled (not started, unless --start) edge_ad.service.
# The web view (live frame, alarms, threshold, Prometheus /metrics) is off until `web: {enabled: true}` in
# station.yaml; it then serves http://127.0.0.1:8080/ (web.host, web.port) and takes the token from web.token_file.
# jetson/uninstall.sh reverses it.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$SCRIPT_DIR/common.sh"   # install locations, say/warn/die/run

SERVICE_GROUPS=(video gpio)      # camera and GPU device nodes, GPIO chips; 'render' is added when it exists
SYSTEM_PYTHON=/usr/bin/python3     # JetPack's Python: its dist-packages hold cv2 and tensorrt
L4T_RELEASE=/etc/nv_tegra_release
WANT_L4T=R36                     # JetPack 6
PIP_TARGET="[jetson,web,opcua,fleet]"  # web view (Flask, waitress), OPC UA server (asyncua), fleet agent (tuf, boto3): pure Python
WEB_PORT=8080                    # the web view's default port (station.yaml web.port); off by default
WEB_TOKEN_FILE="$CONF_DIR/web.token"   # guards threshold changes and rollback; never printed
NUMPY_PIN="numpy<2"              # JetPack's cv2 and TensorRT bindings are built against NumPy 1.x
PIP_OPENCV=opencv-python-headless

REPO_DIR="$(dirname "$SCRIPT_DIR")"

FORCE=0
START=0

usage() {
    cat <<EOF
usage: $(basename "$0") [--dry-run] [--force] [--start]
  --dry-run  print what would be done, change nothing
  --force    install even when this is not a Jetson (no $L4T_RELEASE)
  --start    start the service after installing (default: enabled, not started)
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --force) FORCE=1 ;;
        --start) START=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done


# A missing prerequisite stops a real install before anything changes; a dry run only reports it.
need() {
    if ((DRY_RUN)); then warn "$*"; else die "$*"; fi
}

check_platform() {
    if [[ -r "$L4T_RELEASE" ]]; then
        local release
        release="$(head -n 1 "$L4T_RELEASE")"
        if [[ "$release" == *"# $WANT_L4T "* ]]; then
            say "JetPack 6 found: $release"
        else
            warn "edge_ad targets JetPack 6 ($WANT_L4T); this is: $release. Continuing."
        fi
    elif ((FORCE)); then
        warn "not a Jetson ($L4T_RELEASE absent); continuing because of --force"
    else
        die "not a Jetson ($L4T_RELEASE absent); use --force to install anyway"
    fi
}

check_prerequisites() {
    if ((!DRY_RUN)) && [[ $EUID -ne 0 ]]; then
        die "run as root: sudo $0"
    fi
    local f
    for f in "$REPO_DIR/setup.py" "$SCRIPT_DIR/$SERVICE_NAME" "$SCRIPT_DIR/station.example.yaml" \
        "$SCRIPT_DIR/$UDEV_RULE"; do
        [[ -f "$f" ]] || need "missing $f (run from a complete edge_ad checkout)"
    done
    [[ -x "$SYSTEM_PYTHON" ]] || need "$SYSTEM_PYTHON not found: sudo apt-get install python3"
    "$SYSTEM_PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        need "Python venv support missing: sudo apt-get install python3-venv"
    command -v systemctl >/dev/null || need "systemctl not found: this installer needs systemd"
}

install_venv() {
    say "Python environment in $VENV (sees system packages: JetPack's cv2 and tensorrt)"
    run install -d -m 0755 "$PREFIX"
    if [[ -x "$VENV/bin/python" ]]; then
        say "venv exists; upgrading edge_ad in it"
    else
        run "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
    fi
    run "$VENV/bin/pip" install --upgrade pip
    # constraints.txt pins the tested pure-Python packages here too (its compiled pins are for x86_64 only)
    run "$VENV/bin/pip" install -c "$REPO_DIR/constraints.txt" "$REPO_DIR$PIP_TARGET" "$NUMPY_PIN"
    # pip's OpenCV wheel has no GStreamer and would hide JetPack's cv2 (CSI cameras need GStreamer).
    if "$SYSTEM_PYTHON" -c 'import cv2' 2>/dev/null; then
        say "using JetPack's OpenCV (with GStreamer) instead of the pip wheel"
        run "$VENV/bin/pip" uninstall -y "$PIP_OPENCV"
    else
        warn "$SYSTEM_PYTHON has no cv2; the pip $PIP_OPENCV wheel stays (no GStreamer, so no CSI cameras)"
    fi
    if ((!DRY_RUN)) && ! "$VENV/bin/python" -c 'import tensorrt' 2>/dev/null; then
        warn "TensorRT is not importable from the venv: sudo apt-get install python3-libnvinfer (onnxruntime still works)"
    fi
}

create_user() {
    say "service user $SERVICE_USER"
    if ! getent group gpio >/dev/null; then
        run groupadd --system gpio
    fi
    local groups=() group
    for group in "${SERVICE_GROUPS[@]}" render; do
        # gpio is listed even before a dry run would have created it; others only when they exist
        if [[ "$group" == gpio ]] || getent group "$group" >/dev/null; then
            groups+=("$group")
        elif [[ "$group" != render ]]; then
            warn "group $group does not exist on this system; not adding $SERVICE_USER to it"
        fi
    done
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "user $SERVICE_USER exists"
    else
        run useradd --system --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    local IFS=,
    run usermod -aG "${groups[*]}" "$SERVICE_USER"
}

install_udev_rule() {
    say "GPIO access for the gpio group ($UDEV_DIR/$UDEV_RULE)"
    run install -m 0644 "$SCRIPT_DIR/$UDEV_RULE" "$UDEV_DIR/$UDEV_RULE"
    if command -v udevadm >/dev/null || ((DRY_RUN)); then
        run udevadm control --reload-rules
        run udevadm trigger --subsystem-match=gpio
    else
        warn "udevadm not found: the rule applies after a reboot"
    fi
}

create_dirs() {
    say "folders: $CONF_DIR (config), $DATA_DIR (bundles, engines, recordings), $LOG_DIR"
    run install -d -o root -g "$SERVICE_USER" -m 0750 "$CONF_DIR"
    run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$DATA_DIR" "$LOG_DIR"
    if [[ -e "$CONF_DIR/station.yaml" ]]; then
        say "keeping existing $CONF_DIR/station.yaml"
    else
        run install -o root -g "$SERVICE_USER" -m 0640 "$SCRIPT_DIR/station.example.yaml" "$CONF_DIR/station.yaml"
    fi
}

create_web_token() {
    if [[ -e "$WEB_TOKEN_FILE" ]]; then
        say "keeping the existing web view token $WEB_TOKEN_FILE"
        return
    fi
    say "web view token $WEB_TOKEN_FILE (root and group $SERVICE_USER may read it; not shown)"
    run install -o root -g "$SERVICE_USER" -m 0640 /dev/null "$WEB_TOKEN_FILE"
    if ((!DRY_RUN)); then
        "$SYSTEM_PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$WEB_TOKEN_FILE"
    fi
}

install_service() {
    say "systemd unit $UNIT_DIR/$SERVICE_NAME"
    run install -m 0644 "$SCRIPT_DIR/$SERVICE_NAME" "$UNIT_DIR/$SERVICE_NAME"
    run systemctl daemon-reload
    run systemctl enable "$SERVICE_NAME"
    if ((START)); then
        run systemctl restart "$SERVICE_NAME"
    else
        say "enabled, not started (start it with: sudo systemctl start $SERVICE_NAME)"
    fi
}

main() {
    ((DRY_RUN)) && say "dry run: nothing will be changed"
    check_platform
    check_prerequisites
    install_venv
    create_user
    install_udev_rule
    create_dirs
    create_web_token
    install_service
    say "done. Next:"
    echo "    edit $CONF_DIR/station.yaml (part bundle, camera, alarms)"
    echo "    sudo -u $SERVICE_USER $VENV/bin/edge_ad doctor"
    echo "    sudo -u $SERVICE_USER $VENV/bin/edge_ad export MODEL_int8_trt.onnx --format engine"
    echo "    journalctl -u $SERVICE_NAME -f"
    echo "    web view (off by default): in $CONF_DIR/station.yaml set web.enabled: true and"
    echo "      web.token_file: $WEB_TOKEN_FILE, restart, open http://127.0.0.1:$WEB_PORT/ on the station"
    echo "      (web.host: 0.0.0.0 serves the line network; operators need the token in $WEB_TOKEN_FILE to change things)"
}

main "$@"
