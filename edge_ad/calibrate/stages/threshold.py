"""Threshold stage: the alarm threshold from the deployed model's validation scores (or F1-optimal with defect
images), the readiness verdict, and the stored scores that let a later threshold change be re-judged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ad import data as D
from edge_ad.calibrate.job import CalibrationError, Hook, Job, State, ThresholdResult, say
from edge_ad.calibrate.stages.common import chosen_config, deployed_detector, val_paths
from edge_ad.calibrate.stages.readiness import assess_readiness
from edge_ad.fileio import atomic_write_json

def score_paths(det, paths: list[Path]) -> tuple[list[Path], list[float]]:
    """Scores of image files through the station's detector (run_split: detect_batch, unreadable files skipped, a
    non-finite output an error naming the image)."""
    from edge_ad.runtime.evaluate import run_split

    sc = run_split(det, [D.Sample(p, 0, "calibrate", None) for p in paths], desc="score")
    return [s.path for s in sc.samples], [float(v) for v in sc.scores]


def stage_threshold(job: Job, state: State, hook: Hook | None) -> ThresholdResult:
    """Threshold from the deployed model's scores: val-good quantile + margin, or F1-optimal with defects."""
    from edge_ad import metrics as M
    from edge_ad.runtime.manifest import ModelInfo
    from edge_ad.scoring import threshold_from_good

    sc = chosen_config(job, state).scoring
    q = state.get("quantize")
    det = deployed_detector(q.onnx, job)
    vpaths, val = score_paths(det, val_paths(job, state))
    if not val:
        raise CalibrationError("no readable validation image")
    defect_paths: list[Path] = []
    bad: list[float] = []
    if job.defects is not None:
        defect_paths, bad = score_paths(det, D.list_images(job.defects))
        if not bad:
            raise CalibrationError(f"no readable defect images in {job.defects}")
    metrics = {"val_good": len(val), "val_score_mean": float(np.mean(val)), "val_score_max": float(np.max(val)),
               f"val_score_q{sc.threshold_quantile:g}": float(np.quantile(val, sc.threshold_quantile))}
    deployed = f"deployed {q.variant.replace('_', ' ')} model" if q.variant else "deployed model"
    if bad:
        labels = np.array([0] * len(val) + [1] * len(bad))
        scores = np.array(val + bad)
        threshold, _ = M.f1_optimal_threshold(labels, scores)
        source = f"F1-optimal on {len(val)} validation good + {len(bad)} defect images ({deployed})"
        metrics.update({"defects": len(bad), "image_auroc": M.image_auroc(labels, scores),
                        **{k: v for k, v in M.precision_recall_f1(labels, scores, threshold).items() if k != "threshold"}})
    else:
        threshold = threshold_from_good(np.array(val), sc.threshold_quantile, sc.threshold_margin)
        source = (f"quantile {sc.threshold_quantile:g} of {len(val)} validation good scores x (1 + {sc.threshold_margin:g}) "
                  f"({deployed})")
    metrics["val_false_alarm_rate"] = float(np.mean(np.array(val) >= threshold))
    verdict = assess_readiness(job, state, q.onnx, float(threshold), val,
                               lambda g: threshold_from_good(g, sc.threshold_quantile, sc.threshold_margin))
    readiness = verdict.record()
    metrics["false_alarm_estimate"] = readiness["false_alarms"]
    out_dir = job.stage_dir("threshold")
    for src, name in ((q.json, "model.json"), (state.get("export").json, "model_fp32.json")):
        info = ModelInfo.load(src)
        info.threshold = float(threshold)
        info.meta.update({"threshold_source": source, "part": job.part})
        atomic_write_json(out_dir / name, info.to_dict())
    scores_doc = {"threshold": threshold, "val_good": [{"image": p.name, "score": s} for p, s in zip(vpaths, val)],
                  "defects": [{"image": str(p), "score": s} for p, s in zip(defect_paths, bad)],
                  "synthetic": verdict.synthetic_scores}
    atomic_write_json(out_dir / "scores.json", scores_doc)
    fa = readiness["false_alarms"]
    say(f"threshold {threshold:.5g} ({source}); estimated false alarms {fa['rate']:.1%} "
        f"({fa['confidence']:.0%} interval {fa['ci_low']:.1%}..{fa['ci_high']:.1%}, {fa['goods']} held-out goods)")
    say(f"readiness: {'READY' if readiness['ready'] else 'NOT READY'}: {readiness['reason']}")
    return ThresholdResult(threshold=float(threshold), source=source, metrics=metrics,
                           model_json=str(out_dir / "model.json"), fp32_json=str(out_dir / "model_fp32.json"),
                           scores=str(out_dir / "scores.json"), readiness=readiness)
