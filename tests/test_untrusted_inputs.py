"""Files from outside are untrusted: images, YAML configs, model.json and model.pt. Each bad one is a one-line error
naming the file (never a traceback, never code run, never a decoder told to allocate gigabytes). The trial ids
are those of ../shared/trials/station-faults.md."""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest

from edge_ad import data as D
from edge_ad.cli import main
from edge_ad.config import ConfigError, load_config
from edge_ad.errors import EdgeAdError
from edge_ad.imagesize import header_size
from edge_ad.runtime.detector import open_detector
from edge_ad.runtime.manifest import ModelInfo
from edge_ad.station.config import station_config_from_dict


# --- images --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_header_size_of_every_format_we_read(ext):
    img = np.zeros((37, 91, 3), np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert header_size(data) == (91, 37)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, followed by a tiny (wrong) image stream: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_huge_image_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    with pytest.raises(D.ImageError, match=r"bomb.png: 100000x100000 pixels is more than the 67 Mpx"):
        D.load_image(bomb)
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), np.full((20, 30), 7, np.uint8))
    assert D.load_image(ok).shape == (20, 30, 3)
    with pytest.raises(D.ImageError, match="is a folder, not an image"):
        D.load_image(tmp_path)


def test_nan_pixels_of_a_float_tiff_read_as_black_without_warnings(tmp_path):
    """1i: a float TIFF with NaN gave 'RuntimeWarning: invalid value encountered in cast'."""
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    cv2.imwrite(str(tmp_path / "nan.tiff"), img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = D.load_image(tmp_path / "nan.tiff")
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [0, 0, 0]


def test_predict_takes_a_folder(tiny_onnx, demo_root, tmp_path, capsys):
    """1h: `predict --model M FOLDER` said 'image not found' for a folder that exists."""
    folder = demo_root / "test" / "good"
    assert main(["predict", "--model", str(tiny_onnx), "--out", str(tmp_path / "o"), str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(D.list_images(folder)) and all("score=" in x for x in lines)
    assert len(list((tmp_path / "o").glob("*_heatmap.png"))) == len(lines)


def test_predict_on_a_full_disk_says_so(tiny_onnx, demo_root, small_disk, capsys):
    """6f: predict printed the heatmap path and exited 0 with nothing written."""
    out = small_disk.path / "out"
    out.mkdir()
    small_disk.fill()
    image = D.list_images(demo_root / "test" / "good")[0]
    assert main(["predict", "--model", str(tiny_onnx), "--out", str(out), str(image)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "error: cannot write" in captured.err and "_heatmap.png" in captured.err
    assert list(out.iterdir()) == []


# --- YAML configs ----------------------------------------------------------------------------------------


def test_train_config_that_is_a_list_or_has_an_empty_section_with_an_override(tmp_path):
    """2h: a YAML list, or `train:` with nothing under it, plus --set gave AttributeError/TypeError tracebacks."""
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: .*expected a mapping, got list"):
        load_config(listed, {"train.epochs": 1})
    empty = tmp_path / "nullsec.yaml"
    empty.write_text("train:\n")
    assert load_config(empty, {"train.epochs": 1}).train.epochs == 1
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("train: 3\n")
    with pytest.raises(ConfigError, match=r"scalar.yaml: train: expected a mapping of keys, got int"):
        load_config(scalar, {"train.epochs": 1})


@pytest.mark.parametrize("bad, message", [
    ({"mqtt": {"port": 70000}}, "mqtt.port: must be a TCP port in 1..65535, got 70000"),  # 2l
    ({"roi": [0, 0, 10]}, "roi: must be [x, y, width, height]"),  # 2m: was a ValueError in crop_roi
    ({"roi": [0, 0, 0, 0]}, "roi: must be [x, y, width, height]"),  # 2m: skipped every frame and exited 0
    ({"fault": {"retry_s": 0}}, "fault.retry_s: must be > 0"),
    ({"frame_log_max_mb": 0}, "frame_log_max_mb: must be > 0"),
])
def test_station_config_values_a_station_cannot_run_with(bad, message):
    with pytest.raises(ConfigError) as e:
        station_config_from_dict(bad, "station.yaml")
    assert message in str(e.value) and "station.yaml" in str(e.value)


# --- model.json and model.pt -----------------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["scoring"].__setitem__("out_size", [100]), "scoring.out_size: expected tuple[int, int]"),  # 3d
    (lambda d: d["scoring"].__setitem__("image_score", "median"), "scoring.image_score: must be one of"),  # 3f
    (lambda d: d["data"].__setitem__("image_size", "big"), "data.image_size: expected list"),
    (lambda d: d["scoring"].__setitem__("group_scales", [1.0, 2.0]), "scoring.group_scales: expected 1"),
    (lambda d: d.__setitem__("threshold", "high"), "threshold: expected float, got 'high'"),
    (lambda d: d.pop("scoring"), "scoring: missing (required)"),
    (lambda d: d.__setitem__("scoring", {**d["scoring"], "blur": 2}), "scoring.blur: unknown key"),
])
def test_an_inconsistent_model_json_is_one_line_naming_the_file(edit, message, tiny_onnx, tmp_path, capsys):
    doc = json.loads(tiny_onnx.with_suffix(".json").read_text())
    edit(doc)
    shutil.copy(tiny_onnx, tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(EdgeAdError) as e:
        open_detector(tmp_path)
    assert message in str(e.value) and str(tmp_path / "model.json") in str(e.value) and "\n" not in str(e.value)
    assert main(["predict", "--model", str(tmp_path), "--out", str(tmp_path / "o"), str(tiny_onnx)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_groups_that_the_graph_does_not_have_are_refused_at_load(tiny_onnx, tmp_path):
    """3e: scoring.groups naming a map the graph lacks gave an IndexError at the first frame (and killed the loop)."""
    doc = json.loads(tiny_onnx.with_suffix(".json").read_text())
    doc["scoring"]["groups"] = [[0, 1, 5]]
    shutil.copy(tiny_onnx, tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(EdgeAdError, match=r"model.onnx and model.json: the model has 3 output map\(s\) but"):
        open_detector(tmp_path)
    ModelInfo.load(tmp_path / "model.json")  # the file alone is consistent: only graph + file disagree


def test_model_pt_from_elsewhere_is_refused_and_never_runs_code(tiny_model, tmp_path):
    """3g: a model.pt edited by another version gave KeyError/RuntimeError tracebacks; a pickle must not run."""
    import torch

    from edge_ad.models.artifact import load_model

    good = torch.load(tiny_model, map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    variants = {
        "no_threshold": ({**good, "meta": {k: v for k, v in good["meta"].items() if k != "threshold"}},
                         "missing or bad 'threshold'"),
        "future_format": ({**good, "format": "edge_ad-model-9"}, "not an edge_ad model file (format"),
        "pickled_code": ({**good, "students": Payload()}, "not a readable edge_ad model file"),
        "bad_scoring": ({**good, "scoring": {**good["scoring"], "groups": "all"}}, "scoring.groups"),
    }
    for name, (obj, message) in variants.items():
        path = tmp_path / name / "model.pt"
        path.parent.mkdir()
        torch.save(obj, path)
        with pytest.raises(EdgeAdError) as e:
            load_model(path)
        assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), name
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_model.read_bytes()[:5000])
    with pytest.raises(EdgeAdError, match="truncated.pt: not a readable edge_ad model file"):
        load_model(truncated)
    assert not marker.exists()


def test_an_input_size_the_graph_does_not_take_is_refused_at_load(tiny_onnx, tmp_path):
    doc = json.loads(tiny_onnx.with_suffix(".json").read_text())
    doc["data"]["image_size"] = [96, 96]
    doc["scoring"]["out_size"] = [96, 96]
    shutil.copy(tiny_onnx, tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(EdgeAdError, match=r"model.onnx and model.json: the model's input is \[3, 64, 64\] but"):
        open_detector(tmp_path)
