"""`edge_ad calibrate` end to end: wall time per stage and in total, and the deployed bundle's accuracy.

Each data set's train/good folder is the calibration source (the default recipe keeps capture.n = 200
of them, a seeded spread over the folder); the bundle's INT8 model is then evaluated on the test split
with edge_ad.evaluate (image/pixel AUROC, AUPRO) and at its calibrated threshold (false alarms, detections).

Usage: python benchmarks/calibrate.py [--datasets bottle magnetic_tile] [--recipe calibration/default.yaml]
Smoke run on a tiny procedural part (no real data, about a minute):
       python benchmarks/calibrate.py --demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA_ROOT, load_rows, write_results  # noqa: E402

from edge_ad import data as D  # noqa: E402
from edge_ad import metrics as M  # noqa: E402
from edge_ad.calibrate.pipeline import STAGES, Job, calibrate  # noqa: E402
from edge_ad.evaluate import evaluate, run_split  # noqa: E402
from edge_ad.calibrate.recipe import load_recipe  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_OVERRIDES = {"data.image_size": [64, 64], "model.width": 16, "train.epochs": 2, "train.batch_size": 8,
                  "capture.n": 40, "capture.min_images": 10, "quantize.calib_images": 8, "report.heatmaps": 2}
COLUMNS = ([("dataset", "data set"), ("variant", "recipe"), ("method", "method"), ("precision", "deployed"), ("image_auroc", "image AUROC %"),
            ("pixel_auroc", "pixel AUROC %"), ("aupro", "AUPRO %"), ("test_false_alarm_rate", "test false alarms"),
            ("test_detection_rate", "test detections"), ("train_images", "train imgs"), ("val_images", "val imgs")]
           + [(f"{s}_s", f"{s} s") for s in STAGES] + [("total_s", "total s")])
NOTES = ("Stage times are wall-clock seconds of `edge_ad calibrate` (Python API, --restart) with a folder source. "
         "AUROC/AUPRO: the bundle's deployed INT8 model on the test split (edge_ad.evaluate). False alarms = share of "
         "test good images at or above the calibrated threshold; detections = share of test defect images flagged. "
         "One row per data set and recipe; rows come from two runs: `python benchmarks/calibrate.py` (default recipe, "
         "capture.n 200, 20 epochs; with 10 epochs bottle gave 100 / 98.7 / 96.6 in 71 s and magnetic_tile 68.8 / 55.2 / 57.0) and `python benchmarks/calibrate.py --datasets magnetic_tile --recipe calibration/textured.yaml` "
         "(gauss with stages [4, 8, 16], capture.n 800 = all 716 images of train/good). Earlier runs of the textured recipe "
         "with the stride-16 stage alone gave 93.1 / 81.9 (all images), 92.3 / 82.0 (600 captured) and 88.1 / 80.5 "
         "(200 captured) image / pixel AUROC (runs while choosing its capture.n and stages, not kept as rows).")


def run_one(name: str, root: Path, recipe_path: Path | None, overrides: dict, work: Path, threads: int,
            n: int | None) -> dict:
    ov = {**overrides, "train.threads": threads}
    if n is not None:
        ov["capture.n"] = n if n > 0 else max(2, len(D.list_images(root / "train" / "good")))
    recipe = load_recipe(recipe_path, ov)
    # calibrate keeps captured images across runs: one work folder per recipe and image count, so a run never
    # trains on images another setting captured
    folder = f"{Path(recipe.name).stem}-n{recipe.calib.capture.n}"
    job = Job(part=name, recipe=recipe, source=str(root / "train" / "good"), parts_root=work / "parts" / folder,
              work=work / "work" / folder)
    t0 = time.perf_counter()
    res = calibrate(job, restart=True)
    total = time.perf_counter() - t0
    det = open_detector(res.bundle, "onnxruntime", threads)
    ev = evaluate(det.session.run, det.info.data, det.info.scoring, root, work / "eval" / name)
    samples = D.list_split(root, "test")
    kept, _, scores, _, _ = run_split(det.session.run, det.info.data, det.info.scoring, samples, desc="threshold check")
    at = M.precision_recall_f1(np.array([s.label for s in kept]), scores, det.threshold)
    man = res.manifest
    row = {"dataset": name, "method": recipe.config.model.method, "backend": "onnxruntime", "precision": "int8",
           "variant": f"calibrate {Path(recipe.name).name}", "image_auroc": ev["image_auroc"],
           "pixel_auroc": ev.get("pixel_auroc"), "aupro": ev.get("aupro"),
           "test_false_alarm_rate": at["fp"] / max(at["fp"] + at["tn"], 1), "test_detection_rate": at["recall"],
           "threshold": res.threshold, "threshold_source": man["threshold_source"],
           "train_images": man["split"]["train"], "val_images": man["split"]["val"], "rejected": man["capture"]["rejected"],
           "epochs": recipe.config.distill_epochs, "input_size": "x".join(map(str, recipe.config.data.input_size)),
           "train_minutes": round(res.stage_seconds.get("train", 0.0) / 60, 2), "total_s": round(total, 1)}
    row.update({f"{s}_s": round(res.stage_seconds.get(s, 0.0), 1) for s in STAGES})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["bottle", "magnetic_tile"])
    ap.add_argument("--recipe", type=Path, default=ROOT / "calibration" / "default.yaml")
    ap.add_argument("--n", type=int, help="override capture.n (0: every image in train/good)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_calibrate"), help="work folders and bundles (not committed)")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    ap.add_argument("--demo", action="store_true", help="smoke run: a tiny procedural part and a 64x64, 2-epoch recipe; "
                    "results go to calibrate_smoke.{json,md}")
    ap.add_argument("--name", help="results file name (default: calibrate, or calibrate_smoke with --demo)")
    args = ap.parse_args()
    name = args.name or ("calibrate_smoke" if args.demo else "calibrate")
    overrides: dict = {}
    if args.demo:
        from edge_ad.training.demo_data import make_demo_data

        demo = args.work / "data" / "demo"
        if not (demo / "test").is_dir():
            make_demo_data(demo, n_train=40, n_test_good=8, n_test_bad=8, size=128, overwrite=True)
        roots = {"demo": demo}
        overrides = DEMO_OVERRIDES
    else:
        roots = {d: DATA_ROOT / d for d in args.datasets}
        for d, r in roots.items():
            if not (r / "train" / "good").is_dir():
                sys.exit(f"data set not found: {r} (set EDGE_AD_DATA)")
    variant = f"calibrate {args.recipe.name}"  # one row per data set and recipe
    rows = [r for r in load_rows(name) if not (r["dataset"] in roots and r.get("variant") == variant)]
    for d, r in roots.items():
        row = run_one(d, r, args.recipe, overrides, args.work, args.threads, args.n)
        print({k: v for k, v in row.items() if k != "rejected"}, flush=True)
        rows.append(row)
        rows.sort(key=lambda x: (x["dataset"], x.get("variant", "")))
        write_results(name, rows, COLUMNS, NOTES)


if __name__ == "__main__":
    main()
