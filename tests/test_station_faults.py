"""The fail-safe pieces on their own: bounded log rates, fault fan-out, the frame log on a full disk, config reload."""

from __future__ import annotations

import json
import logging

from edge_ad.station.config import station_config_from_dict
from edge_ad.station.faults import Faults
from edge_ad.station.framelog import FrameLog
from edge_ad.station.lograte import LogLimiter
from edge_ad.station.reload import reread
from edge_ad.station.service import Notifier
from edge_ad.station.status import StationStatus

log = logging.getLogger("edge_ad.test")


def test_log_limiter_lets_a_burst_through_then_one_line_per_interval(caplog):
    now = [0.0]
    limiter = LogLimiter(burst=3, interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="edge_ad.test")
    for _ in range(1000):  # a condition that repeats every frame
        limiter.log(log, logging.WARNING, "lost", "camera lost")
    assert len(caplog.records) == 3
    now[0] = 10.0
    limiter.log(log, logging.WARNING, "lost", "camera lost")
    assert caplog.records[-1].getMessage() == "camera lost (997 similar line(s) suppressed)"
    assert limiter.log(log, logging.WARNING, "other", "another condition")  # keys do not share a budget


class Outputs:
    def __init__(self):
        self.faults: list[str] = []

    def set_fault(self, reason: str) -> None:
        self.faults.append(reason)


def test_faults_are_told_everywhere_once_per_change(caplog):
    status, outputs = StationStatus(), Outputs()
    faults = Faults(status, outputs, Notifier(env={}))
    faults.publish()
    assert status.state == "running" and outputs.faults == [""]
    caplog.set_level(logging.INFO)
    for _ in range(100):
        faults.set("camera", "camera csi://0: no frame for more than 10 s")
    assert status.state == "fault" and status.fault == "camera csi://0: no frame for more than 10 s"
    faults.set("bundle", "bundle v3 does not load; still inspecting with v2")
    assert outputs.faults[1:] == ["camera csi://0: no frame for more than 10 s",
                                  "camera csi://0: no frame for more than 10 s; bundle v3 does not load; still "
                                  "inspecting with v2"]
    assert faults.summary().startswith("FAULT: camera") and faults.active("bundle")
    faults.clear("camera")
    faults.clear("camera")  # nothing to clear: nothing published
    faults.clear("bundle")
    assert status.state == "running" and status.fault == "" and outputs.faults[-1] == "" and len(outputs.faults) == 5
    assert caplog.text.count("FAULT: camera") == 1 and "fault cleared (bundle)" in caplog.text


def test_frame_log_rotates_at_its_size_and_keeps_whole_lines(tmp_path):
    path = tmp_path / "frames.jsonl"
    flog = FrameLog(str(path), max_mb=0.01)  # ~10 KB
    for i in range(400):
        flog.write({"frame": i, "pad": "x" * 40})
    flog.close()
    rotated = tmp_path / "frames.jsonl.1"
    assert path.stat().st_size <= 10_486 and rotated.stat().st_size <= 10_486
    lines = rotated.read_text().splitlines() + path.read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == list(range(400 - len(lines), 400))


def test_frame_log_on_a_full_disk_drops_lines_and_comes_back(small_disk, caplog):
    """6a: the loop died with an OSError traceback."""
    path = small_disk.path / "frames.jsonl"
    flog = FrameLog(str(path))
    flog.write({"frame": 0})
    small_disk.fill()
    for i in range(1, 200):
        flog.write({"frame": i, "pad": "y" * 100})
    assert flog.dropped >= 150 and caplog.text.count("cannot write") <= 6  # the file's last page still had room
    small_disk.free_up()
    flog.write({"frame": 200})
    flog.close()
    frames = [json.loads(x)["frame"] for x in path.read_text().splitlines()]  # every line whole
    assert frames[0] == 0 and frames[-1] == 200 and len(frames) == 201 - flog.dropped


def test_reload_applies_live_keys_and_keeps_the_rest(caplog):
    running = station_config_from_dict({"part": "disc", "threshold": 1.0, "camera": {"source": "csi://0"}})
    edited = station_config_from_dict({"part": "disc", "threshold": 2.0, "roi": [0, 0, 64, 64],
                                       "camera": {"source": "csi://1"}, "debounce": {"window": 1, "min_anomalous": 1}})
    caplog.set_level(logging.INFO)
    new = reread(running, lambda: edited)
    assert new.threshold == 2.0 and new.roi == [0, 0, 64, 64] and new.debounce.window == 1
    assert new.camera.source == "csi://0"  # the camera is built once: a restart is needed
    assert "changes to camera need a restart" in caplog.text

    def broken():
        return station_config_from_dict({"mqtt": {"port": 0}}, "station.yaml")
    assert reread(new, broken) is new
    assert "the station config does not load (station.yaml: mqtt.port" in caplog.text


def test_new_station_keys_have_safe_defaults():
    cfg = station_config_from_dict({})
    assert cfg.allow_not_ready is False and cfg.gpio.fault_pin == -1 and cfg.gpio.alarm_on_fault is False
    assert cfg.fault.camera_lost_s > 0 and cfg.fault.retry_s > 0 and cfg.fault.frame_errors >= 1
    assert cfg.evidence.min_free_mb > 0 and cfg.frame_log_max_mb > 0 and cfg.mqtt.connect_timeout_s > 0
