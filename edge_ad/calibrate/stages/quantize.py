"""Quantize stage: INT8 graphs from training images, each judged against FP32 on held-out goods and synthetic
defects and timed on this machine; the fastest within the accuracy bounds is deployed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from edge_ad.calibrate.job import Hook, Job, QuantizeResult, State, say
from edge_ad.calibrate.stages.common import chosen_config, deployed_detector, judged_set


def time_sessions(sessions: dict, batch: np.ndarray, runs: int) -> dict[str, float]:
    """Median network-only milliseconds per variant, measured interleaved (round robin) so machine noise hits all alike."""
    for s in sessions.values():
        s.run(batch)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(batch)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def stage_quantize(job: Job, state: State, hook: Hook | None) -> QuantizeResult:
    """INT8 graphs from training images (never the validation ones), each judged against FP32 on held-out goods and
    synthetic defects and timed on this machine; the fastest within the accuracy bounds is deployed."""
    from edge_ad.calibrate.judge import judge
    from edge_ad.deploy.quantize import calibration_batch, quantize

    q, cfg = job.recipe.calib.quantize, chosen_config(job, state)
    out_dir = job.stage_dir("quantize")
    fp32 = state.get("export").onnx
    calib = calibration_batch(state.get("split").root, cfg.data, q.calib_images)
    cache = out_dir / "calibration.cache"
    if not q.variants:  # the recipe fixes the INT8 mode: no timing, no choice
        path = quantize(fp32, out_dir / "model.onnx", calib, q.mode, q.method, q.exclude, cache if q.mode == "trt" else None)
        return QuantizeResult(onnx=str(path), json=str(path.with_suffix(".json")), cache=str(cache) if q.mode == "trt" else "",
                              calib_images=len(calib), variant=f"int8_{q.mode}", why="quantize.variants is empty")
    graphs = {}
    for v in q.variants:
        if v == "fp32":
            graphs[v] = Path(fp32)
        else:
            mode = v.removeprefix("int8_")
            graphs[v] = quantize(fp32, out_dir / f"model_{v}.onnx", calib, mode, q.method, q.exclude,
                                 cache if mode == "trt" else None)
    js = judged_set(job, state)
    judged, sessions = {}, {}
    for v, path in graphs.items():
        det = deployed_detector(path, job)
        judged[v] = judge(det, js)
        sessions[v] = det.session
    ref = judged["fp32"] if "fp32" in judged else judge(deployed_detector(fp32, job), js)
    ms = time_sessions(sessions, calib[:1], q.timing_runs)
    table = {}
    for v in graphs:
        d_img = ref.image_auroc - judged[v].image_auroc
        d_pix = ref.pixel_auroc - judged[v].pixel_auroc
        ok = v == "fp32" or (d_img <= q.max_auroc_drop and d_pix <= q.max_auroc_drop)
        table[v] = {"ms": round(ms[v], 3), "image_auroc": round(judged[v].image_auroc, 4),
                    "pixel_auroc": round(judged[v].pixel_auroc, 4), "within_bounds": ok}
    fastest = min((v for v in graphs if table[v]["within_bounds"]), key=lambda v: table[v]["ms"])
    why = (f"{fastest} is the fastest graph on this machine within the accuracy bounds (AUROC drop <= {q.max_auroc_drop:g}): "
           + ", ".join(f"{v} {table[v]['ms']:.2f} ms{'' if table[v]['within_bounds'] else ' (outside bounds)'}"
                       for v in graphs))
    say(f"quantize: {why}")
    chosen = graphs[fastest]
    deployed = out_dir / "model.onnx"
    shutil.copy2(chosen, deployed)
    shutil.copy2(chosen.with_suffix(".json"), deployed.with_suffix(".json"))
    has_cache = "int8_trt" in graphs and cache.is_file()
    return QuantizeResult(onnx=str(deployed), json=str(deployed.with_suffix(".json")), cache=str(cache) if has_cache else "",
                          calib_images=len(calib), precision="fp32" if fastest == "fp32" else "int8", variant=fastest,
                          timings=table, why=why)
