"""edge_ad doctor on this machine: real imports, real device globs, real sockets."""

from __future__ import annotations

import socket
import sys

from edge_ad.station import doctor
from edge_ad.station.doctor import Check, check_disk, check_jetpack, check_mqtt, doctor_ok, format_report, run_doctor

EXPECTED = ["python", "jetpack", "tensorrt", "cuda", "onnxruntime", "cameras", "gpio", "mqtt", "disk"]


def _closed_port() -> int:
    """A loopback port nobody listens on: bind, read the number, close."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_doctor_names_and_basics(tmp_path):
    checks = run_doctor(mqtt_host="127.0.0.1", mqtt_port=_closed_port(), disk_path=tmp_path, timeout_s=0.5)
    assert [c.name for c in checks] == EXPECTED
    by_name = {c.name: c for c in checks}
    assert by_name["python"].ok and sys.version.split()[0] in by_name["python"].detail
    assert by_name["onnxruntime"].ok and "CPUExecutionProvider" in by_name["onnxruntime"].detail
    assert by_name["disk"].ok
    for c in checks:
        assert isinstance(c, Check) and c.detail
        assert c.ok or c.fix, f"{c.name} failed without a fix hint"


def test_tensorrt_missing_is_reported_with_fix():
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        pass
    else:  # a GPU machine: the check must then pass
        assert doctor.check_tensorrt().ok
        return
    check = doctor.check_tensorrt()
    assert not check.ok and check.optional
    assert "not installed" in check.detail
    assert "python3-libnvinfer" in check.fix and "pip install tensorrt" in check.fix


def test_mqtt_closed_port_fails():
    check = check_mqtt("127.0.0.1", _closed_port(), timeout_s=0.5)
    assert not check.ok
    assert "cannot connect" in check.detail and "mosquitto" in check.fix


def test_mqtt_listening_port_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        check = check_mqtt("127.0.0.1", port, timeout_s=0.5)
    assert check.ok, check.detail
    assert f"127.0.0.1:{port}" in check.detail


def test_jetpack_release_parsing(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: x\n")
    check = check_jetpack(release)
    assert check.ok and "R36.3.0" in check.detail and "JetPack 6" in check.detail

    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    old = check_jetpack(release)
    assert not old.ok and "JetPack 5" in old.detail and "JetPack 6" in old.fix

    assert not check_jetpack(tmp_path / "absent").ok
    release.write_text("garbage\n")
    assert "cannot read" in check_jetpack(release).detail


def test_disk_check_on_missing_path_and_threshold(tmp_path):
    assert check_disk(tmp_path / "not" / "yet", min_free_mb=1).ok
    huge = check_disk(tmp_path, min_free_mb=1 << 40)
    assert not huge.ok and "free at least" in huge.fix


def test_format_report_and_required_logic():
    checks = [
        Check("python", True, "3.10"),
        Check("gpio", False, "no chips", "install the udev rule", optional=True),
        Check("disk", False, "full", "free space"),
    ]
    text = format_report(checks)
    assert "[  ok] python" in text
    assert "[WARN] gpio" in text and "fix: install the udev rule" in text
    assert "[FAIL] disk" in text and "1 required check(s) failed: disk" in text
    assert not doctor_ok(checks)
    assert doctor_ok(checks[:2])
    assert "all required checks passed; warnings: gpio" in format_report(checks[:2])


def test_doctor_reports_installed_versions(tmp_path, capsys):
    """The versions line is what to compare with constraints.txt when one machine behaves unlike another."""
    from importlib import metadata

    from edge_ad.cli import main

    main(["doctor", "--mqtt-port", str(_closed_port()), "--disk-path", str(tmp_path)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("installed: "))
    for package in ("numpy", "onnxruntime", "tqdm", "pyyaml"):
        assert f"{package} {metadata.version(package)}" in line
    assert f"python {sys.version.split()[0]}" in line


def test_trigger_input_check_from_the_station_config(tmp_path):
    """`edge_ad doctor --config station.yaml`: triggered mode needs a source, and a GPIO trigger a real input line."""
    from edge_ad.station.config import station_config_from_dict
    from edge_ad.station.doctor import check_opcua, check_trigger

    assert check_trigger(station_config_from_dict({})).ok  # continuous mode: nothing to check
    none = check_trigger(station_config_from_dict({"trigger": {"enabled": True, "mqtt": False, "http": False}}))
    assert not none.ok and "no trigger source" in none.detail and "gpio_pin" in none.fix
    fake = check_trigger(station_config_from_dict({"trigger": {"enabled": True, "gpio_pin": 7},
                                                   "gpio": {"backend": "fake"}}))
    assert not fake.ok and "is not read" in fake.detail
    chip = check_trigger(station_config_from_dict({"trigger": {"enabled": True, "gpio_pin": 7},
                                                   "gpio": {"backend": "gpiod", "chip": str(tmp_path / "nochip")}}))
    assert not chip.ok and "does not open" in chip.detail and chip.fix
    timer = check_trigger(station_config_from_dict({"trigger": {"enabled": True, "timer_s": 1.0}}))
    assert timer.ok and "timer" in timer.detail
    assert check_opcua(station_config_from_dict({})).ok  # off
