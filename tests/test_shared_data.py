"""The real data sets in ../shared/data load through the same code the benchmarks use (skipped when absent)."""

import numpy as np
import pytest

from edge_ad import data as D
from edge_ad.config import DataConfig
from model_fixtures import shared_dataset

EXPECTED = {"bottle": (209, 83), "magnetic_tile": (716, 628), "kolektor": (232, 170)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout_counts_and_masks(name):
    root = shared_dataset(name)
    train, test = D.list_split(root, "train"), D.list_split(root, "test")
    assert (len(train), len(test)) == EXPECTED[name]
    bad = [s for s in test if s.label]
    with_mask = [s for s in bad if s.mask_path.is_file()]
    assert len(bad) - len(with_mask) <= 4  # four magnetic_tile `uneven` masks are missing in the source data
    s = with_mask[0]
    img = D.load_image(s.path)
    mask = D.load_mask(s.mask_path, img.shape[:2])
    assert img.dtype == np.uint8 and img.shape[2] == 3 and mask.shape == img.shape[:2] and mask.any()


def test_grayscale_kolektor_preprocesses_like_rgb():
    root = shared_dataset("kolektor")
    s = D.list_split(root, "train")[0]
    x = D.preprocess(D.load_image(s.path), DataConfig(image_size=[448, 192]))
    assert x.shape == (3, 448, 192) and np.isfinite(x).all()
