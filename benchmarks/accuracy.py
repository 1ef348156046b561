"""Train every method on every shared data set; image/pixel AUROC, AUPRO, epochs and training time.

Usage: python benchmarks/accuracy.py [--datasets bottle magnetic_tile kolektor] [--methods rd rd_aug dual]
A method may be `gauss` (the per-location Gaussian map alone) or `<method>+gauss` (its maps fused with the
Gaussian map); the Gaussian uses the data set config's model.gaussian_stride, else stride 16.
Rows of data sets/methods not rerun are kept from the previous results file.
Smoke run (seconds, the demo part, results in a temp folder): python benchmarks/accuracy.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import yaml  # noqa: E402
import common  # noqa: E402
from common import DATA_ROOT, load_rows, write_results  # noqa: E402

from edge_ad.config import load_config  # noqa: E402
from edge_ad.runtime.evaluate import evaluate  # noqa: E402
from edge_ad.runtime.detector import function_detector  # noqa: E402
from edge_ad.models.artifact import load_model, model_outputs  # noqa: E402
from edge_ad.training.train import train  # noqa: E402

CONFIGS = Path(__file__).parent / "configs"
COLUMNS = [("dataset", "data set"), ("method", "method"), ("variant", "variant"), ("image_auroc", "image AUROC %"), ("pixel_auroc", "pixel AUROC %"),
           ("aupro", "AUPRO %"), ("epochs", "epochs"), ("train_minutes", "train min"), ("input_size", "input"),
           ("teacher", "teacher"), ("pixel_auroc_per_type", "pixel AUROC per type %")]


METHOD_ORDER = ["rd", "rd_aug", "dual", "gauss", "rd+gauss", "rd_aug+gauss", "dual+gauss"]
GAUSSIAN_STRIDE = 16  # deepest distilled stage: the largest receptive field and the fewest locations to model


def variant_name(extra: dict) -> str:
    """The row's variant column: the config overrides it ran with ('' for the data set config as is)."""
    return " ".join(f"{k}={v}" for k, v in extra.items())


def run_one(dataset: str, method: str, work: Path, threads: int, extra: dict, data_root: Path = DATA_ROOT,
            base: dict | None = None) -> dict:
    """Train and evaluate one row; `base` holds overrides that are not the row's variant (the smoke run's sizes)."""
    config_path = CONFIGS / f"{dataset}.yaml"
    config_path = config_path if config_path.is_file() else None
    run_dir = work / dataset / (method + "".join(f"_{v}" for v in extra.values()))  # one folder per row
    ov = {**(base or {}), **extra, "data.root": str(data_root / dataset), "model.method": method.removesuffix("+gauss"),
          "train.out_dir": str(run_dir), "train.threads": threads}
    if "gauss" in method and "model.gaussian_stride" not in extra:
        ov["model.gaussian_stride"] = load_config(config_path).model.gaussian_stride or GAUSSIAN_STRIDE
    cfg = load_config(config_path, ov)
    t0 = time.time()
    model_path = train(cfg)
    minutes = (time.time() - t0) / 60
    model, cfg, spec, meta = load_model(model_path)
    res = evaluate(function_detector(lambda b: model_outputs(model, b), cfg.data, spec), cfg.data.root, run_dir / "eval")
    per = " ".join(f"{k} {100 * v:.1f}" for k, v in res.get("pixel_auroc_per_type", {}).items())
    return {"dataset": dataset, "method": method, "variant": variant_name(extra), "backend": "torch", "precision": "fp32",
            "image_auroc": res["image_auroc"], "pixel_auroc": res.get("pixel_auroc"), "aupro": res.get("aupro"),
            "epochs": meta["epochs"], "train_minutes": round(minutes, 2), "input_size": "x".join(map(str, cfg.data.input_size)),
            "resize": cfg.data.resize, "normalize": cfg.data.normalize, "teacher": cfg.model.teacher, "pixel_auroc_per_type": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["bottle", "magnetic_tile", "kolektor"])
    ap.add_argument("--methods", nargs="+", default=["rd", "rd_aug", "dual"], choices=METHOD_ORDER)
    ap.add_argument("--work", default="runs/bench", help="where models and heatmaps go (not committed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for these runs, recorded in the row's variant column (e.g. model.fusion=product)")
    common.add_smoke_args(ap)
    args = ap.parse_args()
    data_root, base = DATA_ROOT, None
    if args.smoke:  # rd on the demo part: the model int8.py, pruning.py and loop.py --smoke start from
        root = common.smoke_folder(args.out)
        data_root, base, args.work = root / "data", common.SMOKE_CONFIG, str(root / "work")
        args.datasets, args.methods, args.threads = [common.SMOKE_DATASET], ["rd"], 1
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    variant = variant_name(extra)
    rows = [r for r in load_rows("accuracy") if not (r["dataset"] in args.datasets and r["method"] in args.methods
                                                     and r.get("variant", "") == variant)]
    for d in args.datasets:
        if not (data_root / d).is_dir():
            sys.exit(f"data set not found: {data_root / d} (set EDGE_AD_DATA)")
        for m in args.methods:
            row = run_one(d, m, Path(args.work), args.threads, extra, data_root, base)
            print(row, flush=True)
            rows.append(row)
            rows.sort(key=lambda r: (r["dataset"], METHOD_ORDER.index(r["method"]), r.get("variant", "")))
            write_results("accuracy", rows, COLUMNS, NOTES)


NOTES = ("Trained on train/good only, scored on the full test split with the torch backend (FP32). "
         "Pixel metrics are computed at the network input resolution over real image content (letterbox padding excluded). "
         "Training minutes include teacher feature caching (and, for gauss, fitting the Gaussians) and were measured on a "
         "shared 2-core machine. `gauss` = the per-location Gaussian map alone (no student); `X+gauss` = method X with "
         "the Gaussian map as one more normalised group in its fusion; the variant column lists config overrides. "
         "Each run replaces only the rows of the data sets, methods and variant it was given.")

if __name__ == "__main__":
    main()
