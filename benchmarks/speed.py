"""End-to-end ms per frame, batch 1, fixed threads, all variants side by side in one run.

Each row runs in its own process (so peak RSS is that backend's) over the same decoded frames:
preprocess + inference + per-scale maps + upsample/blur + score; decode excluded.
Rows: torch FP32, ORT FP32, ORT INT8 (trt and cpu modes) for rd, pruned rd, dual, gauss and rd+gauss, and an RD4AD-size
reference (WideResNet-50-2 teacher + OCBE + decoder, random weights) in ORT FP32.

Usage: python benchmarks/speed.py [--frames 200] [--threads 2]
Smoke run (seconds: torch, ORT FP32 and one INT8 row of a 64x64 rd model on the demo part, no reference; results in a temp
folder): python benchmarks/speed.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import DATA_ROOT, write_results  # noqa: E402

COLUMNS = [("model", "model"), ("backend", "backend"), ("precision", "precision"), ("variant", "variant"),
           ("ms_median", "ms median"), ("ms_p99", "ms p99"), ("fps", "frames/s"), ("speedup_vs_reference", "x vs reference"),
           ("peak_rss_mb", "peak RSS MB"), ("torch_loaded", "torch imported"), ("params", "params"), ("macs", "MACs")]
WARMUP = 20


def frames(n: int = 8) -> list[np.ndarray]:
    """Decoded frames (real bottle images when present, else noise), reused round-robin."""
    import cv2

    folder = DATA_ROOT / "bottle" / "test" / "broken_large"
    paths = sorted(folder.glob("*.png"))[:n] if folder.is_dir() else []
    if paths:
        return [cv2.imread(str(p)) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (320, 320, 3), dtype=np.uint8) for _ in range(n)]


def worker(model: str, backend: str, n: int, threads: int) -> dict:
    """Time one model in this process; never imports torch for onnxruntime rows."""
    from edge_ad.runtime.detector import open_detector

    det = open_detector(model, backend, threads)
    imgs = frames()
    for i in range(WARMUP):
        det.detect(imgs[i % len(imgs)])
    times = []
    for i in range(n):
        t = time.perf_counter()
        det.detect(imgs[i % len(imgs)])
        times.append((time.perf_counter() - t) * 1e3)
    t = np.array(times)
    return {"ms_median": float(np.median(t)), "ms_p99": float(np.percentile(t, 99)), "fps": float(1e3 / t.mean()),
            "peak_rss_mb": peak_rss_mb(), "torch_loaded": "torch" in sys.modules}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count(module, hw: tuple[int, int]) -> tuple[int, int]:
    """Parameters and multiply-accumulates of convolutions for one input."""
    import torch

    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            macs += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.ConvTranspose2d):
            macs += inp[0].numel() * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(torch.zeros(1, 3, *hw))
    for h in hs:
        h.remove()
    return sum(p.numel() for p in module.parameters()), macs


LITE0, LITE2 = "efficientnet_lite0", "efficientnet_lite2"
MODELS = [("rd", 0.0, 0, [], LITE0), ("rd", 0.5, 0, [], LITE0), ("dual", 0.0, 0, [], LITE0),
          ("gauss", 0.0, 16, [], LITE0), ("gauss", 0.0, 16, [4, 8, 16], LITE0), ("rd", 0.0, 16, [], LITE0),
          ("gauss", 0.0, 16, [4, 8, 16], LITE2)]  # (method, prune ratio, Gaussian stride, its stages, teacher)
DEPLOYED = [MODELS[0], MODELS[-1]]  # the two models calibrate's default recipe deploys (its rd and gauss candidates)
CALIB_METHOD = "percentile"
INT8_VARIANTS = (("trt", True), ("cpu", True), ("cpu", False))  # (quantization mode, teacher kept in float)


def with_frame_mask(onnx: Path) -> Path:
    """A copy of an exported model whose model.json weights each frame's map by its part mask (edge_ad.partmask)."""
    import shutil

    from edge_ad.runtime.detector import ModelInfo

    out = onnx.with_name(onnx.stem + "_framemask.onnx")
    shutil.copyfile(onnx, out)
    info = ModelInfo.load(onnx.with_suffix(".json"))
    info.scoring.frame_mask, info.scoring.frame_mask_min = True, 0.01
    info.save(out)
    return out


def build_models(work: Path, calib_n: int, smoke_data: Path | None = None, models: list | None = None,
                 frame_mask: bool = False) -> list[dict]:
    """rd and dual (random student weights are fine for timing), exported FP32 + INT8, plus the reference.

    `smoke_data`: the smoke run's demo part; only the first model, at the smoke size, minmax INT8, no reference.
    `frame_mask`: also rd INT8 (cpu) with the per-frame part mask, the graph calibrate deploys for a moving part."""
    import torch

    from edge_ad.config import load_config
    from edge_ad.deploy.export import export_onnx
    from edge_ad.models.model import ADModel
    from edge_ad.deploy.quantize import calibration_batch, quantize
    from edge_ad.runtime.detector import ModelInfo
    from edge_ad.scoring import ScoringSpec
    from edge_ad.models.artifact import save_model
    from reference_rd4ad import ReferenceRD4AD

    specs = []
    data_root = smoke_data or DATA_ROOT / "bottle"
    sizes = common.SMOKE_CONFIG if smoke_data else {}
    calib_method = "minmax" if smoke_data else CALIB_METHOD  # histogram calibration takes minutes even on tiny models
    for method, ratio, gauss, stages, teacher in MODELS[:1] if smoke_data else (models or MODELS):
        cfg = load_config(None, {**sizes, "model.method": method, "data.root": str(data_root), "prune.ratio": ratio,
                                 "prune.steps": 1, "model.gaussian_stride": gauss, "model.gaussian_stages": stages,
                                 "model.teacher": teacher})
        hw = tuple(cfg.data.input_size)
        torch.manual_seed(0)
        model = ADModel(cfg.model).eval()
        if model.gaussian is not None:  # statistics of random features: the shapes are what timing depends on
            h, w = (s // gauss for s in cfg.data.input_size)
            model.gaussian.fit(torch.randn(64, model.gaussian.mean.shape[0], h, w))
            method = method if method == "gauss" else f"{method}+gauss"
            method += " stages " + "+".join(map(str, stages)) if stages else ""
        if teacher != LITE0:
            method += f" ({teacher.replace('efficientnet_', '')})"
        if ratio:  # structure only (timing does not depend on the weights): edge_ad prune also fine-tunes
            from edge_ad.training.prune import effective_round_to, make_pruners

            for pruner in make_pruners(model, cfg, effective_round_to(model, cfg)):
                pruner.step()
            method = f"rd pruned {ratio}"
        spec = ScoringSpec(out_size=hw, groups=model.groups, group_scales=[1.0] * len(model.groups),
                           fusion=cfg.model.fusion)
        pt = work / method.replace(" ", "_") / "model.pt"
        pt.parent.mkdir(parents=True, exist_ok=True)
        save_model(model, cfg, spec, {"threshold": 1.0, "data_root": cfg.data.root, "pruned": bool(ratio)}, pt)
        onnx = export_onnx(pt, pt.with_suffix(".onnx"))
        info = ModelInfo.load(onnx.with_suffix(".json"))
        calib = calibration_batch(data_root, info.data, calib_n) if data_root.is_dir() else \
            np.random.default_rng(0).normal(size=(16, 3, *hw)).astype(np.float32)
        params, macs = count(model, hw)
        base = {"model": method, "params": params, "macs": macs}
        specs.append({**base, "path": pt, "backend": "torch", "precision": "fp32", "variant": ""})
        specs.append({**base, "path": onnx, "backend": "onnxruntime", "precision": "fp32", "variant": ""})
        for mode, float_teacher in INT8_VARIANTS[-1:] if smoke_data else INT8_VARIANTS:
            tag = "" if float_teacher else "_int8teacher"
            q = quantize(onnx, pt.parent / f"model_int8_{mode}{tag}.onnx", calib, mode, calib_method,
                         float_teacher=float_teacher)
            specs.append({**base, "path": q, "backend": "onnxruntime", "precision": "int8",
                          "variant": f"{mode} QDQ" + (", teacher fp32" if float_teacher else ", teacher int8 too")})
            if frame_mask and mode == "cpu" and (float_teacher or smoke_data) and not model.gaussian:
                specs.append({**base, "path": with_frame_mask(q), "backend": "onnxruntime", "precision": "int8",
                              "variant": specs[-1]["variant"] + ", frame mask"})  # a moving part's deployed rd
    if smoke_data:  # the WideResNet-50-2 reference alone takes longer to build than the whole smoke run
        return specs
    ref = ReferenceRD4AD().eval()
    ref_path = work / "reference" / "model.onnx"
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(ref, (torch.zeros(1, 3, 256, 256),), str(ref_path), input_names=["image"],
                          output_names=["map0", "map1", "map2"], opset_version=17, dynamo=False)
    ModelInfo(load_config().data, ScoringSpec(out_size=(256, 256)), 1.0, {}).save(ref_path)
    params, macs = count(ref, (256, 256))
    specs.append({"model": "reference RD4AD (WRN50-2)", "params": params, "macs": macs, "path": ref_path,
                  "backend": "onnxruntime", "precision": "fp32", "variant": "random weights"})
    return specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--deployed", action="store_true",
                    help="only the graphs calibrate deploys (rd, gauss on Lite2) and the reference; "
                         "writes results/speed_deployed.{json,md}")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "BACKEND", "N"), help=argparse.SUPPRESS)
    common.add_smoke_args(ap)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], int(args.worker[2]), args.threads)))
        return
    smoke_data = None
    if args.smoke:
        smoke_data = common.smoke_folder(args.out) / "data" / common.SMOKE_DATASET
        args.frames, args.threads, args.calib_images = common.SMOKE_FRAMES, 1, common.SMOKE_DEMO["n_train"]
    with tempfile.TemporaryDirectory(prefix="edge_ad_speed.") as tmp:
        specs = build_models(Path(tmp), args.calib_images, smoke_data, DEPLOYED if args.deployed else None,
                             frame_mask=args.deployed or bool(smoke_data))
        rows = []
        for s in specs:
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--worker", str(s["path"]),
                                  s["backend"], str(args.frames)], capture_output=True, text=True, check=True)
            row = {k: v for k, v in s.items() if k != "path"} | json.loads(out.stdout.strip().splitlines()[-1])
            row["threads"] = args.threads
            print(row, flush=True)
            rows.append(row)
    ref = next((r for r in rows if r["model"].startswith("reference")), None)
    for r in rows if ref else []:
        r["speedup_vs_reference"] = ref["ms_median"] / r["ms_median"]
    write_results("speed_deployed" if args.deployed else "speed", rows, COLUMNS, NOTES.format(frames=args.frames, threads=args.threads))


NOTES = ("Batch 1, 256x256, {threads} threads, median and p99 over {frames} frames after 20 warm-up frames; "
         "end to end = preprocess + inference + maps + blur + score (decode excluded). Every row ran in its own "
         "process one after another in one run; 'x vs reference' is the ratio of medians to the RD4AD-size reference "
         "(ORT FP32). MACs count convolutions only.")

if __name__ == "__main__":
    main()
