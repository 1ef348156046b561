"""A bundle's readiness and threshold-dependent figures at a new threshold, from the scores calibrate stored
(scores.json: validation goods, and synthetic defects when present), so no estimate shown was measured at another
threshold (numpy only, torch-free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ad import metrics as M

CONFIDENCE = M.CONFIDENCE
THRESHOLD_METRICS = ("val_false_alarm_rate", "false_alarm_estimate", "precision", "recall", "f1")


@dataclass
class ThresholdRules:
    """How far a threshold change may go from what calibration measured before the operator must confirm it."""

    range_multiple: float = 3.0  # window: validation scores [min, max] widened by this many times (max - min)


def val_scores(scores_doc: dict | None) -> list[float]:
    """The validation good scores of a scores.json document (finite numbers only)."""
    rows = (scores_doc or {}).get("val_good") or []
    out = [r.get("score") for r in rows if isinstance(r, dict)]
    return [float(v) for v in out if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def window(val: list[float], rules: ThresholdRules) -> tuple[float, float] | None:
    """The thresholds calibration can speak for: [min - m * span, max + m * span], floored at min / (1 + m) so the
    window stays on the scores' scale (span = max - min); None without validation scores."""
    if not val:
        return None
    lo, hi, m = min(val), max(val), rules.range_multiple
    span = (hi - lo) or abs(hi) or 1.0
    return max(lo - m * span, lo / (1 + m)), hi + m * span


def false_alarms_at(val: list[float], threshold: float) -> dict[str, Any]:
    """Validation goods at or above a fixed threshold, with the interval (no leave-one-out: the threshold was not
    derived from these scores)."""
    hits = int(np.sum(np.asarray(val) >= threshold))
    lo, hi = M.clopper_pearson(hits, len(val))
    return {"false_alarms": hits, "goods": len(val), "rate": hits / max(len(val), 1), "ci_low": lo, "ci_high": hi,
            "confidence": CONFIDENCE, "threshold": threshold}


def detection_counts(defect_scores: list[float], sizes: list[str], threshold: float) -> dict[str, tuple[int, int]]:
    """Synthetic defects at or above the threshold per size class: (caught, of)."""
    bad, z = np.asarray(defect_scores, np.float64), np.asarray(sizes)
    return {s: (int(np.sum(bad[z == s] >= threshold)), int(np.sum(z == s))) for s in dict.fromkeys(sizes)}


def threshold_problems(fa: dict, image_auroc: float | None, counts: dict[str, tuple[int, int]],
                       rules: dict) -> list[str]:
    """The readiness rules that depend on the threshold, one table for calibrate's verdict and a re-judged one.

    Large defects fail only when even the top of their 95 % interval is under the floor: synthetic detection at
    the threshold under-predicts real detection (benchmarks/results/calibrate.md), so the floor catches a threshold
    that misses nearly everything, and a rate from a few dozen defects within its own noise of it does not decide;
    none caught always fails."""
    problems = []
    if fa["rate"] > rules.get("max_false_alarm_rate", 0.0):
        problems.append(f"estimated false alarms {fa['rate']:.1%} > {rules['max_false_alarm_rate']:.0%} on held-out "
                        "goods")
    if isinstance(image_auroc, (int, float)) and image_auroc < rules.get("min_image_auroc", 0.0):
        problems.append(f"held-out goods and synthetic defects are not separated (image AUROC {image_auroc:.3f} < "
                        f"{rules['min_image_auroc']:g})")
    caught, of = counts.get("large", (0, 0))
    floor = rules.get("min_detection_large", 0.0)
    top = M.clopper_pearson(caught, of)[1] if of else 1.0
    if of and floor > 0 and (caught == 0 or top < floor):
        problems.append(f"only {caught / of:.0%} of large synthetic defects reach the threshold ({caught} of {of}; "
                        f"95 % interval up to {top:.0%}, floor {floor:.0%})")
    return problems


def readiness_at(old: dict | None, scores_doc: dict | None, threshold: float) -> dict[str, Any]:
    """Readiness re-judged at `threshold` with calibrate's rules, from stored validation and synthetic scores; a
    bundle without them (or without rules) is "not judged at this threshold" (ready None). A bundle that was not
    ready stays not ready."""
    old = old if isinstance(old, dict) else {}
    rules, val = old.get("rules"), val_scores(scores_doc)
    syn = (scores_doc or {}).get("synthetic")
    base = {"judged_at": threshold, "previous": {k: old.get(k) for k in ("ready", "reason") if k in old}}
    missing = [what for what, ok in (("readiness rules", isinstance(rules, dict)), ("validation scores", bool(val)),
                                     ("synthetic defect scores", _synthetic_ok(syn))) if not ok]
    if missing:
        unjudged = f"not judged at this threshold ({threshold:.5g}): the bundle has no stored {', '.join(missing)}"
        if old.get("ready") is False:  # never made runnable by a threshold change
            return {**base, "ready": False, "judged": False,
                    "reason": f"not ready at calibration ({old.get('reason', 'no reason given')}); {unjudged}"}
        return {**base, "ready": None, "judged": False, "reason": unjudged}
    fa = false_alarms_at(val, threshold)
    counts = detection_counts(syn["defect"], list(syn["sizes"]), threshold)
    detect = {s: k / max(n, 1) for s, (k, n) in counts.items()}
    problems = threshold_problems(fa, (old.get("synthetic") or {}).get("image_auroc"), counts, rules)
    if old.get("ready") is False:
        problems.append(f"not ready at calibration ({old.get('reason', 'no reason given')})")
    reason = "; ".join(problems) if problems else (
        f"at threshold {threshold:.5g}: false alarms {fa['rate']:.1%} on held-out goods, synthetic defects detected: "
        + ", ".join(f"{s} {v:.0%}" for s, v in detect.items()))
    return {**base, "ready": not problems, "judged": True, "reason": reason, "false_alarms": fa, "detection": detect,
            "synthetic": old.get("synthetic"), "rules": rules}


def _synthetic_ok(syn: Any) -> bool:
    return (isinstance(syn, dict) and isinstance(syn.get("defect"), list) and isinstance(syn.get("sizes"), list)
            and len(syn["defect"]) == len(syn["sizes"]) > 0
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in syn["defect"]))


def metrics_at(metrics: dict | None, scores_doc: dict | None, threshold: float) -> dict[str, Any]:
    """The manifest's metrics with the threshold-dependent ones recomputed at `threshold` from the stored scores,
    or dropped when they cannot be; the threshold-free ones (AUROC, validation statistics) kept."""
    out = {k: v for k, v in (metrics or {}).items() if k not in THRESHOLD_METRICS}
    val = val_scores(scores_doc)
    if val:
        out["val_false_alarm_rate"] = float(np.mean(np.asarray(val) >= threshold))
        out["false_alarm_estimate"] = false_alarms_at(val, threshold)
    defects = [d.get("score") for d in (scores_doc or {}).get("defects") or [] if isinstance(d, dict)]
    defects = [float(v) for v in defects if isinstance(v, (int, float)) and math.isfinite(v)]
    if val and defects:
        prf = M.precision_recall_f1(np.r_[np.zeros(len(val)), np.ones(len(defects))], np.r_[val, defects], threshold)
        out.update({k: prf[k] for k in ("precision", "recall", "f1")})
    out["at_threshold"] = threshold
    return out
