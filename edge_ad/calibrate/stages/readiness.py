"""The readiness verdict a station checks before it inspects: held-out goods pass, synthetic defects on the part
are caught and localised, the maps watch the part (not its ground), and the pose suits the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from edge_ad.calibrate.job import Job, State
from edge_ad.calibrate.stages.common import chosen_config, deployed_detector, judged_set
from edge_ad.region import MIN_POSE_OVERLAP
from edge_ad.rejudge import detection_counts, threshold_problems

MEAN_MAP_FILE = "mean_good_map.npy"


@dataclass
class Verdict:
    """The verdict with what it was judged on; record() is what the manifest and the report keep."""

    ready: bool
    reason: str
    false_alarms: dict
    detection: dict[str, float]
    synthetic: dict
    rules: dict
    synthetic_scores: dict = field(repr=False, default_factory=dict)  # stored in scores.json for re-judging
    borderline: list[str] = field(default_factory=list)  # floors the verdict met or missed within its own noise

    def record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "synthetic_scores"}


def problems_of(j, fa: dict, threshold: float, r, state: State, job: Job) -> list[str]:
    """Every reason the bundle is not ready, each with what a person can do about it."""
    from edge_ad.calibrate.select import per_location

    counts = detection_counts(j.defect_scores, j.defect_sizes, threshold)
    problems = threshold_problems(fa, j.image_auroc, counts, dataclasses.asdict(r))
    if j.peak_off_part is not None and j.peak_off_part > r.max_peak_off_part:
        problems.append(f"the anomaly maps of {j.peak_off_part:.0%} of held-out good images peak on the ground, not on "
                        f"the part (> {r.max_peak_off_part:.0%}): the model watches the background (sensor noise or a "
                        "textured ground); light the part better, use a plain ground, or crop to the part (station roi)")
    if j.pixel_auroc < r.min_pixel_auroc or (j.aupro is not None and j.aupro < r.min_aupro):
        problems.append(f"synthetic defects on the part are poorly localised (pixel AUROC {j.pixel_auroc:.3f}, AUPRO "
                        f"{j.aupro:.3f}; floors {r.min_pixel_auroc:g} / {r.min_aupro:g}): the maps would not show where a "
                        "defect is")
    overlap = state.get("train").selection.get("pose_overlap")
    if overlap is not None and overlap < MIN_POSE_OVERLAP and per_location(chosen_config(job, state)):
        problems.append(f"a per-location model for a part that moves between images (median overlap {overlap:.2f} < "
                        f"{MIN_POSE_OVERLAP}): it cannot tell a defect from another pose; use a fixture or a recipe "
                        "without the Gaussian map")
    if state.get("split").forced:
        problems.append(f"too few validation images for a meaningful threshold ({state.get('split').val}; --force)")
    return problems


def borderline(j, r) -> list[str]:
    """The synthetic measures whose interval reaches across their floor: a verdict decided by them could go the
    other way on another draw of synthetic defects, and a person should know that before trusting it."""
    from edge_ad.calibrate.judge import CONFIDENCE

    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    out = []
    for name, value, se, floor in (("image AUROC", j.image_auroc, j.image_auroc_se, r.min_image_auroc),
                                   ("AUPRO", j.aupro, j.aupro_se, r.min_aupro)):
        if value is not None and se and floor > 0 and abs(value - floor) < z * se:
            out.append(f"synthetic {name} {value:.3f} +- {z * se:.3f} ({CONFIDENCE:.0%}) reaches across its floor "
                       f"{floor:g}")
    return out


def assess_readiness(job: Job, state: State, onnx: str, threshold: float, val: list[float],
                     rule: Callable[[np.ndarray], float]) -> Verdict:
    """Judge the deployed graph at its threshold on held-out goods and their synthetic defects."""
    from edge_ad.calibrate.judge import detection_rates, false_alarm_estimate, judge

    r = job.recipe.calib.readiness
    j = judge(deployed_detector(onnx, job, threshold), judged_set(job, state), localisation=True)
    fa = false_alarm_estimate(val, rule)
    detect = detection_rates(j, threshold)
    problems = problems_of(j, fa, threshold, r, state, job)
    interval = f"95 % interval {fa['ci_low']:.1%}..{fa['ci_high']:.1%} from {fa['goods']} held-out goods"
    if problems:
        reason = "; ".join(problems) + f" (estimated false alarms {fa['rate']:.1%}, {interval})"
    else:
        reason = (f"estimated false alarms {fa['rate']:.1%} ({interval}), synthetic defects detected: "
                  + ", ".join(f"{s} {v:.0%}" for s, v in detect.items())
                  + f" (image AUROC {j.image_auroc:.3f}, pixel AUROC {j.pixel_auroc:.3f}, AUPRO {j.aupro:.3f})")
    near = borderline(j, r)
    if near:
        reason += ("; within its own noise: " + "; ".join(near) + " (another draw of synthetic defects could land "
                   "on the other side): confirm on real defect images (edge_ad eval) before relying on it")
    if j.mean_good_map is not None:
        save_mean_map(job, j.mean_good_map)
    return Verdict(not problems, reason, fa, detect, j.summary(), dataclasses.asdict(r),
                   {"good": j.good_scores, "defect": j.defect_scores, "sizes": j.defect_sizes}, near)


def save_mean_map(job: Job, m: np.ndarray) -> None:
    """The mean held-out good-image map, for the report (where the model looks when nothing is wrong)."""
    out = job.stage_dir("threshold") / MEAN_MAP_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, m.astype(np.float32))
