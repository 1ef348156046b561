import re
import subprocess
import sys

import pytest

from edge_ad.cli import main

SUBCOMMANDS = ["demo", "train", "eval", "predict", "export", "quantize", "prune", "calibrate", "parts", "run", "doctor",
               "config", "fleet"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edge_ad.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"edge_ad {cmd}" in out and len(out) > 150


def test_top_level_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in SUBCOMMANDS:
        assert cmd in r.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model: {methd: rd}\n")
    r = run_cli("train", "--config", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "model.methd: unknown key" in r.stderr
    r = run_cli("predict", "--model", str(tmp_path / "nope.onnx"), "x.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not found" in r.stderr


def test_train_export_eval_predict(demo_root, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--data", str(demo_root), "--out", str(out), "--epochs", "1", "--set", "data.image_size=[64, 64]",
                 "--set", "model.width=16"]) == 0
    assert main(["export", str(out / "model.pt"), "--int8", "--calib-images", "10", "--mode", "cpu"]) == 0
    assert (out / "model.onnx").is_file() and (out / "model_int8_cpu.onnx").is_file()
    assert main(["eval", str(out / "model.onnx"), "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "metrics.json").is_file() and list((tmp_path / "ev" / "heatmaps").glob("*.png"))
    img = next((demo_root / "test" / "hole").glob("*.png"))
    (tmp_path / "corrupt.png").write_bytes(b"junk")
    code = main(["predict", "--model", str(out), "--out", str(tmp_path / "pred"), str(img), str(tmp_path / "corrupt.png")])
    captured = capsys.readouterr()
    assert code == 1 and "corrupt.png" in captured.err and "score=" in captured.out
    assert (tmp_path / "pred" / f"{img.stem}_heatmap.png").is_file()


def test_python_dash_m_edge_ad_is_the_same_cli(tmp_path):
    """`python -m edge_ad` (the package's __main__) and `python -m edge_ad.cli` run one command line."""
    pkg = subprocess.run([sys.executable, "-m", "edge_ad", "--help"], capture_output=True, text=True)
    assert pkg.returncode == 0 and pkg.stdout.startswith("usage: edge_ad "), pkg.stderr[-2000:]  # not "__main__.py"
    listed = re.findall(r"^    ([a-z]+) ", pkg.stdout, re.MULTILINE)  # one line per subcommand under COMMAND
    assert sorted(listed) == sorted(SUBCOMMANDS)
    assert pkg.stdout == run_cli("--help").stdout
    # the exit status comes through __main__: a user error is 2, one line, no traceback
    r = subprocess.run([sys.executable, "-m", "edge_ad", "predict", "--model", str(tmp_path / "nope.onnx"), "x.png"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_demo_with_gauss_is_seconds_and_reaches_target(tmp_path, capsys):
    """`edge_ad demo --method gauss`: the whole demo (data, fit, torch + ORT eval) with no training at all."""
    assert main(["demo", "--method", "gauss", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "method=gauss, 0 epochs" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("torch", "onnxruntime"))]
    assert len(rows) == 2 and all(float(r[1].rstrip("%")) >= 95.0 for r in rows)
