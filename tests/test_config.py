import pytest

from edge_ad.config import ConfigError, load_config


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.model.method == "rd" and cfg.data.input_size == (256, 256)


def test_overrides_apply(tmp_path):
    cfg = load_config(write(tmp_path, "model: {method: dual}\n"), {"train.epochs": 3})
    assert cfg.model.method == "dual" and cfg.train.epochs == 3


@pytest.mark.parametrize("text, words", [
    ("model: {methd: rd}\n", ["model.methd", "unknown key"]),
    ("train: {epochs: ten}\n", ["train.epochs", "expected int"]),
    ("model: {method: transformer}\n", ["model.method", "must be one of"]),
    ("model: {method: gauss}\n", ["model.gaussian_stride", "needs a stride"]),
    ("model: {gaussian_stride: 32}\n", ["model.gaussian_stride", "must be 0"]),
    ("model: {gaussian_pool: 2}\n", ["model.gaussian_pool", "odd"]),
    ("model: {gaussian_stride: 8, gaussian_stages: [8, 16]}\n", ["model.gaussian_stages", "none above gaussian_stride (8)"]),
    ("data: {image_size: [250, 256]}\n", ["data.image_size", "multiple of 32"]),
    ("scoring: {threshold_quantile: 1.5}\n", ["scoring.threshold_quantile"]),
    ("bogus: 1\n", ["bogus", "unknown key"]),
    ("train: [1, 2]\n", ["train", "expected a mapping"]),
])
def test_bad_values_name_key_and_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: {method: [\n"))


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(write(tmp_path, "train: {epochs: true}\n"))
