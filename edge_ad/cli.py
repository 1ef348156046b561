"""`edge_ad` command line: parse, load config, call one function. Heavy imports happen per subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edge_ad import config_cli
from edge_ad.calibrate import cli as calibrate_cli
from edge_ad.fleet import cli as fleet_cli
from edge_ad.config import GAUSSIAN_STRIDES, IMPORTANCES, ModelConfig, parse_host_port, parse_overrides
from edge_ad.deploy.engine import PRECISIONS
from edge_ad.configdoc import add_options, options_from_args
from edge_ad.deploy.pipeline import FORMATS, ExportOptions
from edge_ad.errors import EdgeAdError
from edge_ad.methods import method_names
from edge_ad.runtime.detector import BACKENDS
from edge_ad.station.doctor import DEFAULT_DISK_PATH, DEFAULT_MQTT_HOST, DEFAULT_MQTT_PORT

log = logging.getLogger("edge_ad")


def _overrides(args: argparse.Namespace) -> dict:
    """--set key=value pairs and the shortcut flags as dotted config overrides."""
    ov = parse_overrides(getattr(args, "set", None))
    for flag, key in (("data", "data.root"), ("method", "model.method"), ("epochs", "train.epochs"),
                      ("out", "train.out_dir"), ("teacher", "model.teacher"), ("gaussian", "model.gaussian_stride")):
        if getattr(args, flag, None) is not None:
            ov[key] = str(getattr(args, flag)) if flag in ("data", "out") else getattr(args, flag)
    return ov


def cmd_train(args: argparse.Namespace) -> int:
    from edge_ad.config import load_config
    from edge_ad.training.train import train

    cfg = load_config(args.config, _overrides(args))
    path = train(cfg, resume=args.resume)
    print(f"model written to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_ad.runtime.evaluate import evaluate
    from edge_ad.runtime.detector import open_detector

    det = open_detector(args.model, args.backend, args.threads)
    root = args.data or det.info.meta.get("data_root")
    if not root:
        raise EdgeAdError("no test data: give --data DIR (an MVTec-layout folder with test/ and ground_truth/)")
    model_dir = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    out = Path(args.out) if args.out else model_dir / "eval"
    errors: list[tuple[Path, str]] = []
    res = evaluate(det, root, out, errors=errors)
    for path, why in errors:
        print(f"{path}\terror\t{why}", file=sys.stderr)
    print(json.dumps({k: v for k, v in res.items() if k != "pixel_auroc_per_type"}, indent=1))
    print(f"metrics and heatmaps written to {out}")
    return 1 if errors else 0


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    from edge_ad import data as D
    from edge_ad.runtime.detector import NonFiniteOutput, open_detector
    from edge_ad.visualize import heatmap_overlay

    det = open_detector(args.model, args.backend, args.threads, args.threshold)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeAdError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    failed = 0
    for path in _image_paths(args.images):
        try:
            img = D.load_image(path)
        except D.ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        try:
            r = det.detect(img)
        except NonFiniteOutput as e:  # never printed as a score against the threshold: NaN >= t is false
            print(f"{path}\terror\t{e}", file=sys.stderr)
            failed += 1
            continue
        heat = out / f"{Path(path).stem}_heatmap.png"
        overlay = heatmap_overlay(img, r.anomaly_map, 0.0, max(2 * r.threshold, r.score), r.threshold)
        if not _imwrite(heat, overlay):
            print(f"error: cannot write {heat} (disk full or not writable); {path} scored {r.score:.4f}", file=sys.stderr)
            failed += 1
            continue
        verdict = "ANOMALY" if r.is_anomaly else "ok"
        print(f"{path}\tscore={r.score:.4f}\tthreshold={r.threshold:.4f}\t{verdict}\t{heat}")
    return 1 if failed else 0


def _image_paths(items: list[str]) -> list[Path]:
    """Files as given; a folder stands for the images directly inside it (sorted by name)."""
    from edge_ad import data as D

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = D.list_images(p)
            if not found:
                raise EdgeAdError(f"no images ({', '.join(D.IMAGE_SUFFIXES)}) in the folder {p}")
            out += found
        else:
            out.append(p)
    return out


def _imwrite(path: Path, image) -> bool:
    """cv2.imwrite that reports a full disk: False unless the whole file is on disk."""
    import cv2

    try:
        ok, buf = cv2.imencode(path.suffix, image)
        if not ok:
            return False
        with open(path, "wb") as f:
            f.write(buf.tobytes())
        return True
    except (OSError, cv2.error):
        path.unlink(missing_ok=True)
        return False


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_ad.demo import run_demo

    run_demo(Path(args.out), method=args.method, epochs=args.epochs)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edge_ad.deploy.pipeline import UnsupportedOps, export

    try:
        export(args.model, options_from_args(ExportOptions, args))
    except UnsupportedOps as e:  # --check-only: a check that found something, not a usage error
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """`quantize X.onnx` is `export X.onnx --int8`, kept so existing scripts keep working."""
    from edge_ad.deploy.pipeline import export

    if not str(args.model).endswith(".onnx"):
        raise EdgeAdError(f"quantize takes an exported .onnx (got {args.model}); from a model.pt use "
                          "`edge_ad export MODEL.pt --int8`")
    opts = options_from_args(ExportOptions, args, QUANT_FLAGS)
    opts.int8, opts.int8_out = True, Path(args.out) if args.out else None
    export(args.model, opts)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from edge_ad.training.prune import prune_model

    path = prune_model(args.model, args.ratio, args.steps, args.importance, args.epochs_per_step, args.out, args.data)
    print(f"pruned model written to {path}; deploy it like any model: edge_ad export {path} --int8")
    return 0


QUANT_FLAGS = ["calib", "calib_images", "mode", "calib_method", "exclude", "int8_teacher", "sensitivity"]
ENGINE_FLAGS = ["precision", "workspace_mb", "dla", "calib_cache", "engine_dir", "force", "trt_log", "check_only",
                "trt_version"]


def _add_quant_flags(p: argparse.ArgumentParser) -> None:
    from edge_ad.deploy.quantize import CALIB_METHODS, QUANT_MODES

    add_options(p, ExportOptions, QUANT_FLAGS, mode={"choices": QUANT_MODES}, calib_method={"choices": CALIB_METHODS},
                exclude={"metavar": "NODE"}, calib={"metavar": "DIR"})


def cmd_run(args: argparse.Namespace) -> int:
    from edge_ad.station.loop import run_station
    from edge_ad.station.service import StopFlag
    from edge_ad.station.config import StationConfig, load_station_config

    def load() -> StationConfig:
        """station.yaml with the command line's overrides; SIGHUP calls it again."""
        cfg = load_station_config(args.config)
        if args.source:
            cfg.camera.source = args.source
        if args.preview:
            cfg.preview = True
        if args.web:
            cfg.web.enabled = True
            cfg.web.host, cfg.web.port = parse_host_port(args.web)
        return cfg

    from edge_ad.fleet.agent import following

    cfg = load()
    logging.getLogger().setLevel(cfg.log_level)
    with StopFlag() as stop, following(cfg, stop) as status:  # fleet.enabled: the agent follows the desired state
        stats = run_station(cfg, stop, args.max_frames, load_config=load, status=status)
    print(f"{stats.frames} frames, {stats.anomalous} anomalous, {stats.alarms} alarms, {stats.dropped} dropped, "
          f"{stats.errors} errors")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_ad.station.doctor import doctor_ok, format_report, run_doctor

    from edge_ad.versions import format_versions, software_versions

    checks = run_doctor(mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, disk_path=args.disk_path)
    if args.config:  # the station's own needs: the trigger input and the OPC UA endpoint
        from edge_ad.station.config import load_station_config
        from edge_ad.station.doctor import station_checks

        checks += station_checks(load_station_config(args.config))
    print(format_report(checks))
    print(format_versions(software_versions()))
    return 0 if doctor_ok(checks) else 1


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (defaults are used for anything it does not set)")
    p.add_argument("--data", help="MVTec-layout category folder (sets data.root)")
    p.add_argument("--method", choices=list(method_names()), help="sets model.method (gauss: the Gaussian map alone, "
                   "needs model.gaussian_stride)")
    p.add_argument("--gaussian", type=int, choices=GAUSSIAN_STRIDES, metavar="STRIDE",
                   help="sets model.gaussian_stride: add a per-location Gaussian map of the teacher's features at this "
                        "stride (catches slow brightness/texture changes that 1-cos misses); 0 = off. Stack finer "
                        "stages into it with --set 'model.gaussian_stages=[4, 8, 16]'")
    p.add_argument("--teacher", help="sets model.teacher (efficientnet_lite0|1|2)")
    p.add_argument("--epochs", type=int, help="sets train.epochs")
    p.add_argument("--out", help="output folder (sets train.out_dir)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config value, e.g. --set data.resize=letterbox")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference backend (auto: by file type)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0: library default)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge_ad", description="Unsupervised visual inspection on the edge: "
                                 "train on good parts only, deploy INT8 to a Jetson, raise alarms.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="make procedural demo data, train, evaluate, show results (no data needed)")
    p.add_argument("--out", default="demo_run", help="working folder for data, model and heatmaps")
    p.add_argument("--method", default=ModelConfig.method, choices=list(method_names()))
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default from the demo config)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a student on good images (rd, rd_aug, dual or gauss)",
                       description="Distil a student from the frozen teacher on train/good images (method gauss: "
                                   "no student, only the per-location Gaussian map is fitted). "
                                   "Writes model.pt, checkpoint.pt, config.yaml and history.json to the output folder.")
    _add_train_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from checkpoint.pt in the output folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="image/pixel AUROC, AUPRO and heatmaps on a test split",
                       description="Evaluate a model (.pt, .onnx or a folder) on an MVTec-layout test split.")
    p.add_argument("model", help="model.pt, model.onnx or a folder holding one")
    p.add_argument("--data", help="MVTec-layout category folder (default: the one it was trained on)")
    p.add_argument("--out", help="folder for metrics.json and heatmaps (default: <model dir>/eval)")
    _add_model_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="score images: score, verdict and a heatmap PNG each")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="model.pt, model.onnx or a folder holding one")
    p.add_argument("--out", default="predictions", help="folder for heatmap PNGs")
    p.add_argument("--threshold", type=float, help="override the model's alarm threshold")
    _add_model_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="deploy a trained model: ONNX, INT8, TensorRT engine, in one verb",
                       description="One graph per model: image -> per-scale distance maps (or the fused map with "
                                   "--fused), checked against torch, with model.json beside it. --int8 adds a "
                                   "post-training INT8 graph from good calibration images; --format engine builds a "
                                   "TensorRT engine on this device (needs TensorRT: a Jetson or an NVIDIA GPU).",
                       epilog="examples:\n  edge_ad export runs/model/model.pt\n"
                              "  edge_ad export runs/model --int8 --calib data/part/train/good\n"
                              "  edge_ad export runs/model --int8 --format engine     # on the Jetson\n"
                              "  edge_ad export model.onnx --format engine --dla 0   # Orin AGX / NX: on a DLA core\n"
                              "  edge_ad export model.onnx --check-only              # TensorRT imports every op? "
                              "(no TensorRT needed)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.pt (or its folder), or an exported .onnx to quantize / build from")
    add_options(p, ExportOptions, ["format", "out", "fused", "int8"], format={"choices": FORMATS})
    _add_quant_flags(p)
    add_options(p, ExportOptions, ENGINE_FLAGS, precision={"choices": PRECISIONS}, dla={"metavar": "N"},
                engine_dir={"metavar": "DIR"}, trt_version={"metavar": "X.Y"})
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="INT8 from calibration images for an exported ONNX (= export X.onnx --int8)",
                       description="Post-training static INT8 (ONNX QDQ + TensorRT calibration cache) of an exported "
                                   "model.onnx; the same as `edge_ad export MODEL.onnx --int8`.")
    p.add_argument("model", help="FP32 model.onnx (with its model.json)")
    p.add_argument("--out", help="output path (default: <model>_int8_<mode>.onnx)")
    _add_quant_flags(p)
    p.set_defaults(func=cmd_quantize)

    from edge_ad.config import PruneConfig as PC

    p = sub.add_parser("prune", help="shrink the student by structural pruning, recovering by distillation",
                       description="Remove a fraction of the channels of every student layer (bottleneck and decoder; "
                                   "the teacher and the student's output heads stay whole) in steps, fine-tuning by "
                                   "distillation on the training images after each, then refit the threshold. Writes "
                                   "model.pt, config.yaml and prune_history.json; export and quantize the result like any "
                                   "model. Unset options come from the model's prune: config section. The other size "
                                   "knob is the teacher: train with --teacher efficientnet_lite0 (the default and "
                                   "smallest) rather than efficientnet_lite1/2.")
    p.add_argument("model", help="trained model.pt or its folder")
    p.add_argument("--ratio", type=float, metavar="R", help=f"fraction of channels removed per student layer, in [0, 1) (default "
                   f"{PC.ratio}); parameters and MACs fall by up to 1-(1-ratio)^2")
    p.add_argument("--steps", type=int, metavar="N", help=f"reach the ratio in N equal steps, recovering after each (default {PC.steps})")
    p.add_argument("--importance", choices=IMPORTANCES, help="which channels go: magnitude = smallest "
                   "weight L2 norm; taylor = smallest |weight x gradient| of the distillation loss "
                   f"(default {PC.importance})")
    p.add_argument("--epochs-per-step", type=int, metavar="N", help=f"recovery distillation epochs after each step (default {PC.finetune_epochs})")
    p.add_argument("--data", metavar="DIR", help="MVTec-layout folder whose train/good images are used (default: the model's training data)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <model dir>/pruned_<ratio in %%>)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("run", help="run the inspection loop on a camera (what the systemd service runs)",
                       description="Capture -> ROI -> detect -> debounce -> alarms (log, MQTT, GPIO) -> evidence. "
                                   "SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the station config (bundle, threshold, roi, "
                                   "debounce, fault; other changes need a restart) and reloads the part bundle, "
                                   "keeping the running one if the new one does not load. A station that cannot "
                                   "inspect says so (MQTT status, GPIO fault line, /healthz, log) and keeps retrying.")
    p.add_argument("--config", required=True, help="station YAML (see jetson/station.example.yaml)")
    p.add_argument("--source", help="override camera.source: csi://0, /dev/video0, 0, rtsp://..., video file, image folder")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (bench tests)")
    p.add_argument("--preview", action="store_true", help="show a heatmap window (needs a display)")
    p.add_argument("--web", metavar="HOST:PORT", help="serve the web view and /metrics here (sets web.enabled, "
                   "web.host, web.port; e.g. 127.0.0.1:8080); needs the web extra: pip install 'edge_ad[web]'")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("doctor", help="check this machine: Python, JetPack, TensorRT, CUDA, cameras, GPIO, broker, disk")
    p.add_argument("--mqtt-host", default=DEFAULT_MQTT_HOST, help=f"broker to check (default: {DEFAULT_MQTT_HOST})")
    p.add_argument("--mqtt-port", type=int, default=DEFAULT_MQTT_PORT, help=f"its port (default: {DEFAULT_MQTT_PORT})")
    p.add_argument("--disk-path", default=DEFAULT_DISK_PATH, help="folder whose free space is checked")
    p.add_argument("--config", help="station.yaml: also check its trigger input and OPC UA endpoint (a running "
                   "station serves it)")
    p.set_defaults(func=cmd_doctor)

    fleet_cli.register(sub, parts=calibrate_cli.register(sub))
    config_cli.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return args.func(args)
    except EdgeAdError as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge_ad parts show X | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, as a shell tool killed by it


if __name__ == "__main__":
    sys.exit(main())
