"""Measure the learnt quantities the default test suite asserts, across training seeds and torch thread counts.

A test that asserts a learnt number (an AUROC, a loss drop, a score gap) must hold on every CPU, thread count and
BLAS build; its bound comes from this spread, with a margin, and the test's comment cites the measured extreme.
Run once after changing the tiny test model or the demo data (minutes on 2 cores); prints one JSON line per run
and a summary (min or max of each quantity).

Usage: python tools/learnt_bounds.py [--seeds 10] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import cv2
    import torch

    import model_fixtures as F
    from edge_ad import data as D
    from edge_ad.config import load_config
    from edge_ad.deploy.export import export_onnx
    from edge_ad.deploy.quantize import calibration_batch, quantize
    from edge_ad.runtime.evaluate import evaluate
    from edge_ad.runtime.detector import function_detector
    from edge_ad.models.artifact import load_model, model_outputs
    from edge_ad.runtime.detector import open_detector
    from edge_ad.training.demo_data import make_demo_data
    from edge_ad.training.prune import prune_model
    from edge_ad.training.train import train
    from test_loop import PATTERN, defect, FRAME_HW

    tmp = Path(tempfile.mkdtemp(prefix="edge_ad_bounds."))
    root = make_demo_data(tmp / "part", progress=False, **F.DEMO)
    goods = [D.load_image(p) for p in D.list_images(root / "train" / "good")]
    video = tmp / "line.avi"  # as tests/test_loop.py's fixture writes and decodes it
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, FRAME_HW[::-1])
    for i, kind in enumerate(PATTERN):
        f = goods[i % len(goods)]
        w.write(cv2.resize(f if kind == "good" else defect(f), FRAME_HW[::-1]))
    w.release()
    cap, decoded = cv2.VideoCapture(str(video)), []
    while (got := cap.read())[0]:
        decoded.append(got[1])
    tests = [D.load_image(s.path) for s in D.list_split(root, "test")[:3]]

    def corr(a_det, b_det) -> float:
        return min(float(np.corrcoef(a_det.detect(i).anomaly_map.ravel(), b_det.detect(i).anomaly_map.ravel())[0, 1])
                   for i in tests)

    rows = []
    for threads in args.threads:
        for seed in range(args.seeds):
            run = tmp / f"t{threads}_s{seed}"
            ov = {**F.TINY_MODEL, "train.threads": threads, "train.seed": seed, "data.root": str(root)}
            path = train(load_config(None, {**ov, "train.out_dir": str(run / "rd")}))
            torch.set_num_threads(threads)
            hist = json.loads((path.parent / "history.json").read_text())
            model, cfg, spec, _ = load_model(path)
            res = evaluate(function_detector(lambda b: model_outputs(model, b), cfg.data, spec), root)
            onnx = export_onnx(path, path.with_suffix(".onnx"))
            fp = open_detector(onnx, threads=threads)
            scores = [fp.detect(f).score for f in decoded]
            good = max(s for s, k in zip(scores, PATTERN) if k == "good")
            bad = min(s for s, k in zip(scores, PATTERN) if k == "bad")
            calib = calibration_batch(root, fp.info.data, 12)
            int8 = {m: corr(fp, open_detector(quantize(onnx, run / f"q_{m}.onnx", calib, m, "minmax"), threads=threads))
                    for m in ("trt", "cpu")}
            pruned = prune_model(path, ratio=0.5, steps=1, finetune_epochs=1, out_dir=run / "pruned")
            p_onnx = export_onnx(pruned, run / "pruned.onnx")
            p_q = quantize(p_onnx, run / "pruned_q.onnx", calibration_batch(root, fp.info.data, 12), "trt", "minmax")
            gcfg = load_config(None, {**F.TINY, "train.threads": threads, "train.seed": seed, "model.method": "gauss",
                                      "model.gaussian_stride": 8, "data.root": str(root), "train.out_dir": str(run / "g")})
            g = train(gcfg)
            gdet = open_detector(g, "torch")
            gres = evaluate(gdet, root)
            row = {"threads": threads, "seed": seed, "loss_ratio": hist[-1]["loss"] / hist[0]["loss"],
                   "image_auroc": res["image_auroc"], "pixel_auroc": res["pixel_auroc"], "loop_bad_over_good": bad / good,
                   "int8_trt_corr": int8["trt"], "int8_cpu_corr": int8["cpu"],
                   "pruned_int8_corr": corr(open_detector(p_onnx, threads=threads), open_detector(p_q, threads=threads)),
                   "gauss_image_auroc": gres["image_auroc"]}
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            rows.append(row)
    worst = {k: (max if k == "loss_ratio" else min)(r[k] for r in rows) for k in rows[0] if k not in ("threads", "seed")}
    print("worst over", len(rows), "runs:", json.dumps({k: round(v, 4) for k, v in worst.items()}))


if __name__ == "__main__":
    main()
