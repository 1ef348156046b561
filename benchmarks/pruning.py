"""Accuracy vs speed of structurally pruned students: params, MACs, ORT FP32/INT8 latency, image/pixel AUROC.

Starts from the rd models trained by benchmarks/accuracy.py (<work>/<dataset>/rd/model.pt). For every ratio
it prunes the student (ratio 0 = the trained model itself), exports FP32 ONNX and INT8 (cpu-mode QDQ), scores
both on the test split, and times both end to end, each in its own process (benchmarks/speed.py's worker).
Writes benchmarks/results/pruning.{json,md} and pruning.png (image AUROC vs INT8 latency).

Usage: python benchmarks/pruning.py [--datasets bottle magnetic_tile] [--ratios 0 0.3 0.5 0.7]
Smoke run (seconds, the demo part, ratio 0.5, results in a temp folder): python benchmarks/pruning.py --smoke
[--out DIR]; or by hand on tiny inputs: --data-root DIR --work DIR --results DIR with a model at
<work>/<dataset>/rd/model.pt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
import speed  # noqa: E402
from common import DATA_ROOT, load_rows, write_results  # noqa: E402
from int8 import pick, score  # noqa: E402

from edge_ad import data as D  # noqa: E402
from edge_ad.config import PruneConfig  # noqa: E402
from edge_ad.deploy.export import export_onnx  # noqa: E402
from edge_ad.deploy.quantize import DEFAULT_CALIB_IMAGES, calibration_batch, quantize  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402

METHOD = "rd"
QUANT_MODE, CALIB_METHOD = "cpu", "percentile"  # cpu mode: the fast INT8 path of ORT on x86
COLUMNS = [("dataset", "data set"), ("prune_ratio", "ratio"), ("precision", "precision"), ("params", "student params"),
           ("macs", "student MACs"), ("student_macs_share", "student share of MACs"), ("image_auroc", "image AUROC %"),
           ("pixel_auroc", "pixel AUROC %"), ("aupro", "AUPRO %"), ("ms_median", "ms median"), ("ms_p99", "ms p99"),
           ("fps", "frames/s"), ("speedup", "x vs ratio 0"), ("prune_minutes", "prune min")]


def time_model(path: Path, frames: int, threads: int) -> dict:
    """End-to-end latency of one ONNX model in a fresh process (speed.py's worker: same frames, no torch)."""
    out = subprocess.run([sys.executable, speed.__file__, "--threads", str(threads), "--worker", str(path), "onnxruntime",
                          str(frames)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"timing {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cost(pt: Path) -> dict:
    """Student params and MACs (torch-pruning counter) and the students' share of all conv MACs."""
    from edge_ad.training.prune import student_cost
    from edge_ad.models.artifact import load_model

    model, cfg, _, _ = load_model(pt)
    params, macs = student_cost(model, cfg)
    _, conv_macs_all = speed.count(model, cfg.data.input_size)
    _, conv_macs_teacher = speed.count(model.teacher, cfg.data.input_size)
    return {"params": params, "macs": macs,
            "student_macs_share": (conv_macs_all - conv_macs_teacher) / max(conv_macs_all, 1)}


def run_ratio(ds: str, data: Path, src: Path, ratio: float, args: argparse.Namespace) -> list[dict]:
    """Prune (unless ratio 0), export, quantize, evaluate and time: one FP32 and one INT8 row."""
    from edge_ad.training.prune import prune_model

    folder = src.parent / "pruning" / f"r{round(100 * ratio):02d}"
    t0 = time.time()
    pt = src if ratio == 0 else prune_model(src, ratio, args.steps, args.importance, args.epochs_per_step, folder, data)
    prune_minutes = (time.time() - t0) / 60 if ratio else 0.0
    onnx = export_onnx(pt, folder / "model.onnx")
    info = open_detector(onnx, "onnxruntime", args.threads).info
    calib = calibration_batch(data, info.data, args.calib_images)
    int8 = quantize(onnx, folder / f"model_int8_{QUANT_MODE}.onnx", calib, QUANT_MODE, args.calib_method)
    samples = D.list_split(data, "test")
    base = {"dataset": ds, "method": METHOD, "backend": "onnxruntime", "prune_ratio": ratio,
            "importance": info.meta.get("prune", {}).get("importance", "none"), "prune_minutes": round(prune_minutes, 2),
            **cost(pt)}
    rows = []
    for precision, path, variant in (("fp32", onnx, f"ratio {ratio}"), ("int8", int8, f"ratio {ratio}, {QUANT_MODE} {args.calib_method}")):
        res, _ = score(open_detector(path, "onnxruntime", args.threads), samples)
        rows.append({**base, "precision": precision, "variant": variant, **pick(res),
                     **time_model(path, args.frames, args.threads), "threads": args.threads})
        print(rows[-1], flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """Image AUROC vs INT8 latency: one point per ratio, one series per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for ds in sorted({r["dataset"] for r in rows}):
        pts = sorted((r for r in rows if r["dataset"] == ds and r["precision"] == "int8"), key=lambda r: r["prune_ratio"])
        ax.plot([r["ms_median"] for r in pts], [100 * r["image_auroc"] for r in pts], "o-", label=ds)
        for r in pts:
            ax.annotate(f"{r['prune_ratio']:g}", (r["ms_median"], 100 * r["image_auroc"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"ORT INT8 ({QUANT_MODE} QDQ) end-to-end latency, ms median")
    ax.set_ylabel("image AUROC %")
    ax.set_title("Student pruning: accuracy vs speed (labels: pruning ratio)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["bottle", "magnetic_tile"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7])
    ap.add_argument("--importance", choices=["magnitude", "taylor"], help=f"default: prune config ({PruneConfig.importance})")
    ap.add_argument("--steps", type=int, help=f"pruning steps (default: prune config, {PruneConfig.steps})")
    ap.add_argument("--epochs-per-step", type=int, help=f"recovery epochs per step (default {PruneConfig.finetune_epochs})")
    ap.add_argument("--data-root", default=str(DATA_ROOT), help="folder holding the data sets (default: ../shared/data)")
    ap.add_argument("--work", default="runs/bench", help="where accuracy.py left <dataset>/rd/model.pt; pruned models go beside")
    ap.add_argument("--results", default=str(common.RESULTS), help="folder for pruning.{json,md,png}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200, help="timed frames per model (after speed.py's warm-up)")
    ap.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES)
    ap.add_argument("--calib-method", default=CALIB_METHOD, help=f"INT8 calibration (default {CALIB_METHOD})")
    common.add_smoke_args(ap)
    args = ap.parse_args()
    if args.smoke:  # the demo part's tiny rd model (accuracy.py --smoke's, or trained now)
        root = common.smoke_folder(args.out)
        common.smoke_model(root, METHOD)
        args.datasets, args.ratios = [common.SMOKE_DATASET], [0.5]
        args.data_root, args.work = str(root / "data"), str(root / "work")
        args.results, args.threads, args.frames = str(root / "results"), 1, common.SMOKE_FRAMES
        args.steps, args.epochs_per_step, args.calib_images = 1, 1, common.SMOKE_DEMO["n_train"]
        args.calib_method = "minmax"  # histogram calibration takes minutes even on tiny models
    common.RESULTS = Path(args.results)  # write_results/load_rows read it at call time
    import torch

    torch.set_num_threads(args.threads)
    todo = []
    for ds in args.datasets:
        src, data = Path(args.work) / ds / METHOD / "model.pt", Path(args.data_root) / ds
        if not src.is_file():
            sys.exit(f"{src} missing: run benchmarks/accuracy.py --datasets {ds} --methods {METHOD} first")
        if not (data / "test").is_dir():
            sys.exit(f"data set not found: {data} (set --data-root or EDGE_AD_DATA)")
        todo.append((ds, data, src))
    rows = [r for r in load_rows("pruning") if r["dataset"] not in args.datasets]
    for ds, data, src in todo:
        for ratio in sorted(args.ratios):
            rows += run_ratio(ds, data, src, ratio, args)
            add_speedups(rows)
            rows.sort(key=lambda r: (r["dataset"], r["prune_ratio"], r["precision"]))
            write_results("pruning", rows, COLUMNS, NOTES)
    print(f"plot: {plot(rows, common.RESULTS / 'pruning.png')}")


def add_speedups(rows: list[dict]) -> None:
    """Latency ratio to the unpruned model of the same data set and precision."""
    for r in rows:
        ref = next((b for b in rows if b["dataset"] == r["dataset"] and b["precision"] == r["precision"]
                    and b["prune_ratio"] == 0), None)
        if ref:
            r["speedup"] = ref["ms_median"] / r["ms_median"]


NOTES = ("rd models from benchmarks/accuracy.py; ratio = fraction of channels removed from every student layer "
         "(bottleneck and decoder; teacher and output heads whole), reached in equal steps with recovery distillation "
         "after each, threshold refitted (ratio 0 = the trained model). Params and MACs are the student's "
         "(torch-pruning counter); 'student share' is the student's part of all conv MACs (teacher included). "
         "Accuracy from ONNX Runtime on the full test split (FP32, and INT8 cpu-mode QDQ with percentile calibration "
         "on train/good images). Latency: batch 1, end to end (preprocess + inference + maps + blur + score), each "
         "model in its own process, median/p99 after warm-up, measured one model at a time on a shared machine.")

if __name__ == "__main__":
    main()
