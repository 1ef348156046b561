"""Station YAML: the shipped example loads, and every mistake names the key and the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from edge_ad.errors import EdgeAdError
from edge_ad.station.config import StationConfig, load_station_config, station_config_from_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "jetson" / "station.example.yaml"


def test_example_loads_and_lists_every_setting():
    cfg = load_station_config(EXAMPLE)
    assert cfg.station == "line3-cam1" and cfg.part == "bottle" and cfg.runtime == "auto"
    assert cfg.mqtt.enabled and cfg.mqtt.password_env == "EDGE_AD_MQTT_PASSWORD" and cfg.mqtt.port == 8883
    assert cfg.gpio.backend == "jetson" and cfg.camera.source == "csi://0" and cfg.threshold is None
    assert cfg.bundle_dir() == Path("/var/lib/edge_ad/parts/bottle/current")
    raw = yaml.safe_load(EXAMPLE.read_text())
    for f in dataclasses.fields(StationConfig):
        assert f.name in raw, f"{f.name} missing from the example"
        if isinstance(raw[f.name], dict):
            documented = set(raw[f.name])
            fields = {g.name for g in dataclasses.fields(getattr(cfg, f.name))} - {"csi_pipeline"}
            assert fields <= documented, f"{f.name}: {sorted(fields - documented)} missing from the example"


def test_defaults_without_a_file_section():
    cfg = station_config_from_dict({"part": "p", "mqtt": None})
    assert cfg.mqtt.qos == 1 and cfg.debounce.window == 5 and cfg.camera.file_mode == "every"


@pytest.mark.parametrize("data, message", [
    ({"mqtt": {"prot": 1}}, "mqtt.prot: unknown key"),
    ({"camara": {}}, "camara: unknown key"),
    ({"mqtt": {"port": "1883"}}, "mqtt.port: expected int, got '1883'"),
    ({"gpio": {"active_high": "yes"}}, "gpio.active_high: expected bool"),
    ({"debounce": {"window": True}}, "debounce.window: expected int"),
    ({"camera": "0"}, "camera: expected a mapping"),
    ({"gpio": {"mode": "blink"}}, "gpio.mode: must be one of hold, pulse"),
    ({"mqtt": {"qos": 3}}, "mqtt.qos: must be one of 0, 1, 2"),
    ({"debounce": {"window": 2, "min_anomalous": 3}}, "debounce.min_anomalous: must be <="),
    ({"evidence": {"max_mb": 0}}, "evidence.max_mb: must be > 0"),
    ({"part": "a/b"}, "part: must not contain"),
    ({"mqtt": {"password_env": "A", "password_file": "/x"}}, "cannot be combined"),
])
def test_mistakes_name_the_key_and_the_file(tmp_path, data, message):
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EdgeAdError) as err:
        load_station_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_numbers_and_nulls(tmp_path):
    cfg = station_config_from_dict({"camera": {"fps": 25}, "threshold": 1})
    assert cfg.camera.fps == 25.0 and isinstance(cfg.camera.fps, float) and cfg.threshold == 1.0
    with pytest.raises(EdgeAdError, match="camera.fps: expected float"):
        station_config_from_dict({"camera": {"fps": None}})


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(EdgeAdError, match="station config not found"):
        load_station_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: [unclosed\n")
    with pytest.raises(EdgeAdError, match="not valid YAML"):
        load_station_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(EdgeAdError, match="expected a mapping"):
        load_station_config(top)
