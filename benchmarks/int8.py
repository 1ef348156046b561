"""FP32 vs INT8 accuracy (each quantization mode and calibration method) and torch-vs-ORT parity.

Uses the models trained by benchmarks/accuracy.py (runs/bench/<dataset>/<method>/model.pt); reruns replace only
the rows of the data sets and method given.
Usage: python benchmarks/int8.py [--datasets bottle magnetic_tile kolektor] [--method rd]
Smoke run (seconds, the demo part, results in a temp folder): python benchmarks/int8.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import load_rows, write_results  # noqa: E402

from edge_ad import data as D  # noqa: E402
from edge_ad.runtime.evaluate import compute_metrics, run_split  # noqa: E402
from edge_ad.deploy.export import export_onnx  # noqa: E402
from edge_ad.deploy.quantize import DEFAULT_CALIB_IMAGES, calibration_batch, quantize  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402

COLUMNS = [("dataset", "data set"), ("method", "method"), ("backend", "backend"), ("precision", "precision"),
           ("variant", "variant"), ("image_auroc", "image AUROC %"), ("pixel_auroc", "pixel AUROC %"), ("aupro", "AUPRO %"),
           ("d_image_pt", "Δ image pt"), ("d_pixel_pt", "Δ pixel pt"), ("map_rel_mae", "mean |Δmap| / mean map"),
           ("map_max_abs_diff_rel", "max |Δmap| / range")]


def score(det, samples):
    sc = run_split(det, samples)
    kept, maps, scores, masks, boxes = sc.samples, sc.maps, sc.scores, sc.masks, sc.boxes
    return compute_metrics(kept, maps, scores, masks, boxes), maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["bottle", "magnetic_tile", "kolektor"])
    ap.add_argument("--method", default="rd")
    ap.add_argument("--work", default="runs/bench")
    ap.add_argument("--threads", type=int, default=2)
    common.add_smoke_args(ap)
    args = ap.parse_args()
    if args.smoke:  # the demo part's tiny rd model (accuracy.py --smoke's, or trained now)
        root = common.smoke_folder(args.out)
        common.smoke_model(root, args.method)
        args.datasets, args.work, args.threads = [common.SMOKE_DATASET], str(root / "work"), 1
    rows = [r for r in load_rows("int8") if not (r["dataset"] in args.datasets and r["method"] == args.method)]
    for ds in args.datasets:
        pt = Path(args.work) / ds / args.method / "model.pt"
        if not pt.is_file():
            sys.exit(f"{pt} missing: run benchmarks/accuracy.py --datasets {ds} --methods {args.method} first")
        onnx = export_onnx(pt, pt.with_suffix(".onnx"))
        torch_det = open_detector(pt, "torch", args.threads)
        info = torch_det.info
        samples = D.list_split(info.meta["data_root"], "test")
        ref, ref_maps = score(torch_det, samples)
        fp32, fp32_maps = score(open_detector(onnx, "onnxruntime", args.threads), samples)
        calib = calibration_batch(info.meta["data_root"], info.data, DEFAULT_CALIB_IMAGES)
        base = {"dataset": ds, "method": args.method}
        rows.append({**base, "backend": "torch", "precision": "fp32", "variant": "trained model", **pick(ref)})
        rows.append({**base, "backend": "onnxruntime", "precision": "fp32", "variant": "exported", **pick(fp32),
                     **delta(fp32, ref), "map_max_abs_diff_rel": max_rel_diff(fp32_maps, ref_maps)})
        variants = [(mode, method, True) for mode in ("trt", "cpu") for method in ("minmax", "percentile", "entropy")]
        variants += [(mode, "percentile", False) for mode in ("trt", "cpu")]
        if args.smoke:  # both modes and both teacher settings; histogram calibration takes minutes even here
            variants = [("trt", "minmax", True), ("cpu", "minmax", False)]
        for mode, method, float_teacher in variants:
            tag = "" if float_teacher else "_int8teacher"
            q = quantize(onnx, pt.parent / f"model_int8_{mode}_{method}{tag}.onnx", calib, mode, method,
                         float_teacher=float_teacher)
            res, maps = score(open_detector(q, "onnxruntime", args.threads), samples)
            rows.append({**base, "backend": "onnxruntime", "precision": "int8",
                         "variant": f"{mode} {method}" + ("" if float_teacher else ", teacher int8 too"),
                         **pick(res), **delta(res, fp32), "map_rel_mae": rel_mae(maps, fp32_maps),
                         "map_max_abs_diff_rel": max_rel_diff(maps, fp32_maps)})
            print(rows[-1], flush=True)
        rows.sort(key=lambda r: (r["dataset"], r["method"]))
        write_results("int8", rows, COLUMNS, NOTES)


def pick(res: dict) -> dict:
    return {k: float(res[k]) for k in ("image_auroc", "pixel_auroc", "aupro") if k in res}


def delta(res: dict, base: dict) -> dict:
    """Change vs the baseline in AUROC points (negative = worse)."""
    return {"d_image_pt": 100 * (res["image_auroc"] - base["image_auroc"]),
            "d_pixel_pt": 100 * (res["pixel_auroc"] - base["pixel_auroc"])}


def rel_mae(maps, base_maps) -> float:
    """Mean |map - base| over all pixels relative to the mean base map value."""
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(maps, base_maps)]) / np.mean([b.mean() for b in base_maps]))


def max_rel_diff(maps, base_maps) -> float:
    """Largest per-image max |map - base| relative to that base map's range."""
    return float(max(np.abs(a - b).max() / max(float(b.max() - b.min()), 1e-12) for a, b in zip(maps, base_maps)))


NOTES = ("FP32 ONNX rows compare with the trained torch model (parity); INT8 rows compare with ORT FP32. "
         "Δ columns are AUROC points; max |Δmap| / range is the worst image's largest anomaly-map difference "
         "relative to its reference map range. Calibration: 128 train/good images chosen evenly. "
         "Only Conv/ConvTranspose are quantized; the cosine-distance tail stays in float, and by default so does the "
         "teacher (rows 'teacher int8 too' quantize it as well: its noise goes straight into 1-cos).")

if __name__ == "__main__":
    main()
