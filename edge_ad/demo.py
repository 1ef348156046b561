"""`edge_ad demo`: the whole pipeline on a procedural part, so a new user sees it work end to end.

An entry point beside cli.py (not in training/): it trains, exports and runs the model, so it sits above training,
deploy and runtime, and training never imports the runtime.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge_ad.config import ModelConfig, load_config
from edge_ad.methods import get_method

DEMO_CONFIG = Path(__file__).parent / "training" / "configs" / "demo.yaml"
DEMO_GAUSSIAN_STRIDE = 16  # a Gaussian-only method on the demo part: the deepest stage, as in the textured recipe


def run_demo(out: Path, method: str = ModelConfig.method, epochs: int | None = None) -> dict:
    """Make demo data (once), train, evaluate; print a small table and where the heatmaps are."""
    from edge_ad.training.demo_data import make_demo_data
    from edge_ad.runtime.evaluate import evaluate
    from edge_ad.runtime.detector import open_detector
    from edge_ad.training.train import train

    data_dir = out / "data"
    if not (data_dir / "train").is_dir():
        make_demo_data(data_dir)
    overrides = {"data.root": str(data_dir), "model.method": method, "train.out_dir": str(out / f"model_{method}")}
    if epochs:
        overrides["train.epochs"] = epochs
    if get_method(method).needs_gaussian:
        overrides["model.gaussian_stride"] = DEMO_GAUSSIAN_STRIDE
    cfg = load_config(DEMO_CONFIG, overrides)
    t0 = time.time()
    model_path = train(cfg)
    train_s = time.time() - t0
    rows = []
    for backend, path in _deployables(model_path):
        det = open_detector(path, backend)
        res = evaluate(det, data_dir, path.parent / f"eval_{backend}")
        rows.append((backend, res))
    print()
    print(f"edge_ad demo: method={method}, {cfg.distill_epochs} epochs, trained in {train_s:.0f} s")
    print(f"{'backend':<12} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO':>7}")
    for backend, res in rows:
        print(f"{backend:<12} {100 * res['image_auroc']:>10.1f}% {100 * res['pixel_auroc']:>10.1f}% {100 * res['aupro']:>6.1f}%")
    print(f"heatmaps: {rows[0][1]['heatmaps']}")
    return {backend: res for backend, res in rows}


def _deployables(model_path: Path) -> list[tuple[str, Path]]:
    """The trained torch model, plus its ONNX export when the export module is available."""
    out = [("torch", model_path)]
    try:
        from edge_ad.deploy.export import export_onnx
    except ImportError:
        return out
    return out + [("onnxruntime", export_onnx(model_path, model_path.with_suffix(".onnx")))]
