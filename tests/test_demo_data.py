"""The procedural demo category has MVTec layout, sane masks, is deterministic and never clobbers data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.training.demo_data import DEFECT_TYPES, MASK_AREA_RANGE, make_demo_data, render_sample
from edge_ad.errors import EdgeAdError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=4, n_test_good=2, n_test_bad=7, size=128, progress=False)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read_all(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo") / "disc", seed=3, **SMALL)


def test_layout_and_counts(demo):
    assert sorted(p.name for p in demo.iterdir()) == ["ground_truth", "test", "train"]
    assert _names(demo / "train") == ["good"]
    assert _names(demo / "train" / "good") == ["000.png", "001.png", "002.png", "003.png"]
    assert _names(demo / "test") == sorted(["good", *DEFECT_TYPES])
    assert _names(demo / "test" / "good") == ["000.png", "001.png"]
    assert _names(demo / "ground_truth") == sorted(DEFECT_TYPES)
    # 7 defective images dealt round-robin: scratch 3, hole 2, stain 2.
    expected = {"scratch": 3, "hole": 2, "stain": 2}
    for kind, n in expected.items():
        assert _names(demo / "test" / kind) == [f"{i:03d}.png" for i in range(n)]
        assert _names(demo / "ground_truth" / kind) == [f"{i:03d}_mask.png" for i in range(n)]


def test_images_and_masks(demo):
    for image_path in demo.rglob("*.png"):
        if "ground_truth" in image_path.parts:
            continue
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        kind = image_path.parent.name
        if kind == "good":
            continue
        mask = cv2.imread(str(demo / "ground_truth" / kind / f"{image_path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        area = np.count_nonzero(mask) / mask.size
        assert MASK_AREA_RANGE[0] <= area <= MASK_AREA_RANGE[1], (image_path, area)


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defects_stand_out_from_their_surroundings(kind):
    # At the default 256 px the masked region's mean colour differs clearly from a ring of surface around it.
    for index in range(6):
        image, mask = render_sample(seed=5, split="test", index=index, defect=kind, size=256)
        pixels = image.astype(np.float32)
        ring = (cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=3) > 0) & (mask == 0)
        contrast = np.abs(pixels[mask > 0].mean(axis=0) - pixels[ring].mean(axis=0)).sum()
        assert contrast > 30, (kind, index, contrast)


def test_render_sample_good_has_no_mask():
    image, mask = render_sample(seed=0, split="train", index=0, defect=None, size=128)
    assert image.shape == (128, 128, 3) and mask is None


def test_good_parts_vary_but_stay_close(demo):
    a, b = (cv2.imread(str(demo / "train" / "good" / n)).astype(np.float32) for n in ("000.png", "001.png"))
    assert not np.array_equal(a, b)
    assert abs(a.mean() - b.mean()) < 0.1 * a.mean()


def test_deterministic_for_a_seed(tmp_path, demo):
    again = make_demo_data(tmp_path / "again", seed=3, **SMALL)
    first, second = _read_all(demo), _read_all(again)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    other = _read_all(make_demo_data(tmp_path / "other", seed=4, **SMALL))
    assert not np.array_equal(first["train/good/000.png"], other["train/good/000.png"])


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "disc"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(EdgeAdError, match="not empty"):
        make_demo_data(out, **SMALL)
    assert _names(out) == ["keep.txt"]
    assert _names(tmp_path) == ["disc"]  # no temp folder left behind

    make_demo_data(out, overwrite=True, **SMALL)
    assert not (out / "keep.txt").exists() and (out / "train" / "good" / "000.png").exists()
    assert _names(tmp_path) == ["disc"]


def test_empty_existing_folder_is_filled(tmp_path):
    out = tmp_path / "disc"
    out.mkdir()
    assert make_demo_data(out, **SMALL) == out.resolve()
    assert (out / "test" / "hole" / "000.png").exists()


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(EdgeAdError, match="at least 64"):
        make_demo_data(tmp_path / "x", size=32, progress=False)
    with pytest.raises(EdgeAdError, match="n_train"):
        make_demo_data(tmp_path / "x", n_train=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_command_line_tool(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "make_demo_data.py"), str(tmp_path / "cli"),
           "--n-train", "2", "--n-test-good", "1", "--n-test-bad", "3", "--size", "64", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cli").rglob("*.png"))) == 2 + 1 + 3 + 3
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error:") and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
