import cv2
import numpy as np
import pytest

from edge_ad import data as D
from edge_ad.config import DataConfig


def test_odd_formats_load_as_bgr8(tmp_path):
    gray = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(40, 30)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    for name in ("g.png", "g16.png", "a.png"):
        img = D.load_image(tmp_path / name)
        assert img.shape == (40, 30, 3) and img.dtype == np.uint8
        assert np.array_equal(img[:, :, 0], gray), name  # 16-bit scaled back exactly, alpha dropped


def test_corrupt_and_missing_files_are_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(D.ImageError, match="bad.png"):
        D.load_image(tmp_path / "bad.png")
    with pytest.raises(D.ImageError, match="not found"):
        D.load_image(tmp_path / "missing.png")


def test_load_prepared_skips_unreadable(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    imgs, kept = D.load_prepared(D.list_images(tmp_path), DataConfig(image_size=[32, 32]))
    assert [p.name for p in kept] == ["ok.png"] and imgs[0].shape == (32, 32, 3)
    assert "broken.png" in caplog.text


def test_letterbox_geometry_and_mask_alignment():
    cfg = DataConfig(image_size=[64, 64], resize="letterbox")
    img = np.full((20, 40, 3), 200, np.uint8)
    out = D.prepare(img, cfg)
    assert out.shape == (64, 64, 3)
    y0, y1, x0, x1 = D.valid_box((20, 40), cfg)
    assert (y0, y1, x0, x1) == (16, 48, 0, 64)
    assert (out[y0:y1, x0:x1] == 200).all() and (out[:y0] == D.LETTERBOX_FILL).all()
    mask = np.zeros((20, 40), bool)
    mask[5:10, 10:20] = True
    m = D.prepare_mask(mask, cfg)
    assert m[25:31, 17:31].all() and not m[:16].any() and 100 <= m.sum() <= 160  # rows 8-16 +16 pad, cols 16-32


def test_center_crop_and_normalisation():
    cfg = DataConfig(image_size=[96, 96], center_crop=[64, 64])
    x = D.preprocess(np.full((50, 50, 3), 255, np.uint8), cfg)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], (1 - D.IMAGENET_MEAN) / D.IMAGENET_STD, rtol=1e-5)


def test_wrong_frame_type_is_one_clear_error():
    with pytest.raises(D.ImageError, match="BGR uint8"):
        D.prepare(np.zeros((10, 10), np.float32), DataConfig())


def test_mvtec_listing(demo_root):
    train = D.list_split(demo_root, "train")
    test = D.list_split(demo_root, "test")
    assert all(s.label == 0 for s in train)
    bad = [s for s in test if s.label]
    assert bad and all(s.mask_path.is_file() for s in bad)
    with pytest.raises(D.ImageError, match="MVTec layout"):
        D.list_split(demo_root / "train", "train")
