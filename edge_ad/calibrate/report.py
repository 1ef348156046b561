"""The calibration report: score histogram with the threshold line, sample heatmaps, a Markdown page.

matplotlib (Agg) draws the histogram when installed (edge_ad[dev]); otherwise cv2 draws a plain one,
so a Jetson without matplotlib still gets a report with pictures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from edge_ad import data as D
from edge_ad.calibrate.job import CAPTURED, Hook, Job, ReportResult, State
from edge_ad.fileio import atomic_write
from edge_ad.methods import get_method
from edge_ad.versions import software_versions

HIST_SIZE = (900, 420)  # (width, height) of the histogram image in pixels
GOOD_BGR, DEFECT_BGR, LINE_BGR = (80, 160, 60), (60, 60, 220), (200, 80, 0)


def histogram_png(good: list[float], defects: list[float], threshold: float, path: Path, bins: int = 30) -> Path:
    """Histogram of validation-good (and defect) scores with the threshold as a vertical line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _histogram_cv2(good, defects, threshold, path, bins)
    lo, hi = _range(good, defects, threshold)
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = plt.subplots(figsize=(HIST_SIZE[0] / 100, HIST_SIZE[1] / 100), dpi=100)
    ax.hist(good, bins=edges, alpha=0.7, color="tab:green", label=f"validation good ({len(good)})")
    if defects:
        ax.hist(defects, bins=edges, alpha=0.6, color="tab:red", label=f"defects ({len(defects)})")
    ax.axvline(threshold, color="tab:blue", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("anomaly score (deployed model)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _range(good: list[float], defects: list[float], threshold: float) -> tuple[float, float]:
    vals = np.array(list(good) + list(defects) + [threshold], dtype=np.float64)
    lo, hi = float(vals.min()), float(vals.max())
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _histogram_cv2(good: list[float], defects: list[float], threshold: float, path: Path, bins: int) -> Path:
    w, h = HIST_SIZE
    left, right, top, bottom = 60, 20, 40, 50
    img = np.full((h, w, 3), 255, np.uint8)
    lo, hi = _range(good, defects, threshold)
    edges = np.linspace(lo, hi, bins + 1)
    series = [(np.histogram(good, edges)[0], GOOD_BGR)]
    if defects:
        series.append((np.histogram(defects, edges)[0], DEFECT_BGR))
    peak = max(int(c.max()) for c, _ in series) or 1
    x_of = lambda v: int(left + (v - lo) / (hi - lo) * (w - left - right))  # noqa: E731
    y_of = lambda c: int(h - bottom - c / peak * (h - top - bottom))  # noqa: E731
    for k, (counts, colour) in enumerate(series):
        for i, c in enumerate(counts):
            if c:
                x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
                half = (x1 - x0) // len(series)
                cv2.rectangle(img, (x0 + k * half, y_of(c)), (x0 + (k + 1) * half - 1, h - bottom), colour, -1)
    cv2.line(img, (left, h - bottom), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, h - bottom), (0, 0, 0), 1)
    xt = x_of(threshold)
    for y in range(top, h - bottom, 10):
        cv2.line(img, (xt, y), (xt, min(y + 5, h - bottom)), LINE_BGR, 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{lo:.4g}", (left, h - bottom + 20), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, f"{hi:.4g}", (w - right - 60, h - bottom + 20), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "anomaly score (deployed model)", (w // 2 - 120, h - 12), font, 0.5, (0, 0, 0), 1)
    cv2.putText(img, str(peak), (10, top + 5), font, 0.45, (0, 0, 0), 1)
    legend = f"green: validation good ({len(good)})" + (f"   red: defects ({len(defects)})" if defects else "")
    cv2.putText(img, legend + f"   dashed: threshold {threshold:.4g}", (left, 25), font, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
    return path


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def choices(state: State) -> list[str]:
    """Markdown lines: why the input settings, the model and the deployed graph are what they are."""
    split, train, q = state.get("split"), state.get("train"), state.get("quantize")
    lines = ["## What calibrate chose, and why", ""]
    lines += [f"- input: {w}" for w in split.why]
    sel = train.selection
    if sel.get("candidates"):
        lines += [f"- model: {sel.get('why', '')}", "", "| candidate | method | teacher | steps | train s | image AUROC | "
                  "pixel AUROC | score |", "|---|---|---|---|---|---|---|---|"]
        for c in sel["candidates"]:
            j = c["judgement"]
            lines.append(f"| {c['name']} | {c['method']} | {c['teacher']} | {c['steps']} | {c['train_seconds']} | "
                         f"{j['image_auroc']:.3f} | {j['pixel_auroc']:.3f} | {j['score']:.3f} |")
        lines.append("")
    if q.timings:
        lines += [f"- deployed graph: {q.why}", "", "| graph | ms | image AUROC | pixel AUROC | within bounds |",
                  "|---|---|---|---|---|"]
        lines += [f"| {v} | {d['ms']:.2f} | {d['image_auroc']:.3f} | {d['pixel_auroc']:.3f} | {'yes' if d['within_bounds'] else 'no'} |"
                  for v, d in q.timings.items()]
    if split.forced:
        lines += ["", f"- **{split.forced}**"]
    return lines + [""]


def write_report(path: Path, summary: list[tuple[str, str]], capture: dict, stage_seconds: dict[str, float],
                 histogram: str, heatmaps: list[tuple[str, str]], warnings: list[str], engine: dict,
                 versions: dict[str, str], choice_lines: list[str] | None = None) -> Path:
    """report.md: summary, choices, capture counts, histogram, heatmaps, time per stage, engine, warnings, versions."""
    lines = [f"# Calibration report: {dict(summary).get('part', '')}", ""]
    lines += _table(summary) + [""] + (choice_lines or [])
    rejected = capture.get("rejected", {})
    rel = capture.get("relative", {})
    lines += ["## Capture", "", f"Kept {capture.get('images', 0)} images ({capture.get('new', 0)} new in the last run); "
              "rejected: " + (", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "none") + "."
              + (f" Judged against the set itself: median grey {rel['mean_grey_median']}, median sharpness "
                 f"{rel['sharpness_median']}, outliers beyond {rel['relative_z']} robust sigmas"
                 f" ({len(rel.get('excluded', []))} left out)." if rel.get("mean_grey_median") is not None else "")
              + (f" Examples of rejected frames: {capture['rejected_dir']}." if capture.get("rejected_dir") and
                 sum(rejected.values()) else ""), ""]
    lines += ["## Scores", "", f"![score histogram]({histogram})", "",
              "Scores of the held-out validation good images (and defect images when given), scored by the deployed "
              "INT8 model. Frames at or above the dashed line raise an alarm.", ""]
    if heatmaps:
        lines += ["## Sample heatmaps", "", "Left: network input; right: anomaly map (white outline: at or above the threshold).", ""]
        lines += [f"**{caption}**\n\n![{caption}]({name})\n" for name, caption in heatmaps]
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in stage_seconds.items()]
    lines += [f"| total | {sum(stage_seconds.values()):.1f} |", ""]
    lines += ["## TensorRT engine", "", (f"Built: {engine.get('file')} ({engine.get('trt_version')}, {engine.get('gpu_name')})"
                                         if engine.get("file") else f"Not built: {engine.get('skipped', 'unknown reason')}"), ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["## Software", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    atomic_write(path, "\n".join(lines))
    return path


def heatmaps(job: Job, state: State, out_dir: Path) -> list[tuple[str, str]]:
    """Overlays of the highest-scoring validation goods and of defects spread over their score range."""
    from edge_ad.runtime.detector import open_detector
    from edge_ad.runtime.manifest import ModelInfo
    from edge_ad.visualize import heatmap_overlay

    k = job.recipe.calib.report.heatmaps
    if not k:
        return []
    th = state.get("threshold")
    info = ModelInfo.load(th.model_json)
    det = open_detector(state.get("quantize").onnx, "onnxruntime", job.recipe.config.train.threads, info.threshold)
    scores = json.loads(Path(th.scores).read_text())
    good = sorted(scores["val_good"], key=lambda d: -d["score"])[:k]
    bad = sorted(scores["defects"], key=lambda d: d["score"])
    if len(bad) > k:
        bad = [bad[int(i)] for i in np.linspace(0, len(bad) - 1, k).round()]
    picks = [(job.dir / CAPTURED / d["image"], "validation good") for d in good] + [(Path(d["image"]), "defect") for d in bad]
    out = []
    for i, (path, kind) in enumerate(picks):
        img = D.load_image(path)
        r = det.detect(img)
        shown = cv2.cvtColor(D.prepare_view(img, info.data), cv2.COLOR_RGB2BGR)
        panel = heatmap_overlay(shown, r.anomaly_map, 0.0, 2 * info.threshold, info.threshold)
        name = f"heatmap_{i:02d}_{kind.split()[-1]}.png"
        cv2.imwrite(str(out_dir / name), np.hstack([shown, panel]))
        verdict = "ALARM" if r.is_anomaly else "ok"
        out.append((name, f"{kind} {path.name}: score {r.score:.4g} ({verdict})"))
    return out


def mean_map_png(job: Job, state: State, out_dir: Path) -> str | None:
    """Where the model looks when nothing is wrong: the mean held-out good map over one validation image, with the
    learnt part region outlined in green (the map is zero outside it)."""
    from edge_ad.calibrate.stages import MEAN_MAP_FILE, val_paths
    from edge_ad.region import REGION_EPS, weight_map
    from edge_ad.runtime.manifest import ModelInfo
    from edge_ad.visualize import heatmap_overlay

    src = job.stage_dir("threshold") / MEAN_MAP_FILE
    paths = val_paths(job, state)
    if not src.is_file() or not paths:
        return None
    info = ModelInfo.load(state.get("threshold").model_json)
    m = np.load(src)
    shown = cv2.cvtColor(D.prepare(D.load_image(paths[0]), info.data), cv2.COLOR_RGB2BGR)
    shown = cv2.normalize(shown, None, 0, 255, cv2.NORM_MINMAX)  # a dark part is shown stretched, as the model sees it
    panel = heatmap_overlay(shown, m, 0.0, max(info.threshold, float(m.max()), 1e-12))  # red only near the threshold
    inside = (weight_map(info.scoring.region, m.shape) > REGION_EPS).astype(np.uint8) \
        if info.scoring.region is not None else None
    if inside is not None and inside.mean() < WHOLE_FRAME_SHARE:
        contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(panel, contours, -1, (0, 255, 0), 1)
    cv2.imwrite(str(out_dir / "mean_good_map.png"), np.hstack([shown, panel]))
    return "mean_good_map.png"


WHOLE_FRAME_SHARE = 0.99  # region pixels covering this share of the frame: no part region, only evened weights


def region_line(job: Job, state: State) -> str:
    """What the model learnt about where the part is, in one line."""
    from edge_ad.region import REGION_EPS
    from edge_ad.runtime.manifest import ModelInfo

    spec = ModelInfo.load(state.get("threshold").model_json).scoring
    if spec.region is None:
        return "whole frame (no part on a plain ground was found in the good images, or scoring.region is off)"
    share = float((np.asarray(spec.region) > REGION_EPS).mean())
    if share >= WHOLE_FRAME_SHARE:
        return ("whole frame (no part on a plain ground was found in the good images); the map is evened where good "
                "images' maps are always high")
    line = f"learnt from the good images: {share:.0%} of the frame; the map is not used outside it"
    if spec.frame_mask:
        line += ("; within it, each frame's map counts only on the part found in that frame (grown by "
                 f"{spec.frame_mask_grow:.1%} of the side; a frame where less than {spec.frame_mask_min:.1%} is found "
                 "is scored unmasked)")
    return line


def method_line(job: Job, state: State) -> str:
    """The model in one line, e.g. 'rd (efficientnet_lite0, width 64, 20 epochs)'."""
    from edge_ad.calibrate.stages import chosen_config

    cfg = chosen_config(job, state)
    tr = state.get("train")
    stages = "+".join(map(str, cfg.model.gaussian_stages))
    gauss = (f", Gaussian map at stride {cfg.model.gaussian_stride}" + (f" (stages {stages})" if stages else "")
             if cfg.model.gaussian_stride else "")
    if not get_method(tr.method).has_student:
        return f"{tr.method} ({cfg.model.teacher}{gauss}, no student)"
    return f"{tr.method} ({cfg.model.teacher}, width {cfg.model.width}, {tr.epochs} epochs{gauss})"


def stage_report(job: Job, state: State, hook: Hook | None) -> ReportResult:
    out_dir = job.stage_dir("report")
    out_dir.mkdir(parents=True)
    th = state.get("threshold")
    scores = json.loads(Path(th.scores).read_text())
    good = [d["score"] for d in scores["val_good"]]
    bad = [d["score"] for d in scores["defects"]]
    histogram_png(good, bad, th.threshold, out_dir / "histogram.png", job.recipe.calib.report.histogram_bins)
    maps = heatmaps(job, state, out_dir)
    mean_map = mean_map_png(job, state, out_dir)
    if mean_map:
        maps.insert(0, (mean_map, "where the model looks: mean map of the held-out good images on the threshold's "
                        "scale (red = at the threshold; green: the learnt part region, outside it the map is not used)"))
    from edge_ad.calibrate.stages import chosen_config

    cfg, q, m = chosen_config(job, state), state.get("quantize"), th.metrics
    summary = [("part", job.part), ("created", time.strftime("%Y-%m-%d %H:%M:%S")), ("recipe", job.recipe.name),
               ("method", method_line(job, state)),
               ("input size", f"{cfg.data.input_size[0]} x {cfg.data.input_size[1]} ({cfg.data.resize})"),
               ("deployed model", q.variant or q.precision),
               ("threshold", f"{th.threshold:.5g}"), ("threshold source", th.source),
               ("images", f"{state.get('split').train} train, {state.get('split').val} validation"),
               ("part region", region_line(job, state))]
    rd = th.readiness
    if rd:
        fa = rd["false_alarms"]
        summary += [("readiness", ("READY" if rd["ready"] else "NOT READY") + f": {rd['reason']}"),
                    ("estimated false alarms", f"{fa['rate']:.1%} ({fa['false_alarms']} of {fa['goods']} held-out goods, "
                     f"leave-one-out; {fa['confidence']:.0%} interval {fa['ci_low']:.1%} to {fa['ci_high']:.1%})"),
                    ("synthetic defects detected", ", ".join(f"{s} {v:.0%}" for s, v in rd["detection"].items()))]
    if "image_auroc" in m:
        summary += [("defect images", str(m["defects"])), ("image AUROC (val good vs defects)", f"{m['image_auroc']:.3f}"),
                    ("precision / recall / F1 at threshold", f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}")]
    import dataclasses

    from edge_ad.calibrate.stages import notes

    write_report(out_dir / "report.md", summary, dataclasses.asdict(state.get("capture")), state.seconds(),
                 "histogram.png", maps, notes(state), dataclasses.asdict(state.get("engine")), software_versions(),
                 choices(state))
    return ReportResult(dir=str(out_dir), files=sorted(p.name for p in out_dir.iterdir()))
