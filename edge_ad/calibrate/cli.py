"""`edge_ad calibrate` and `edge_ad parts list|show|rollback`: registered into edge_ad.cli via register()."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from edge_ad import bundle as B
from edge_ad.calibrate.recipe import packaged_recipes
from edge_ad.config import parse_overrides
from edge_ad.errors import EdgeAdError

DEFAULT_PARTS_ROOT = "parts"
DEFAULT_WORK = "calib_work"

CALIBRATE_HELP = """\
Turn good images of a new part into a deployable part bundle in one command:
capture (camera or folder, rejecting blurred, badly exposed and duplicate frames) -> train/validation
split -> train -> prune (if the recipe says so) -> ONNX + INT8 -> threshold from validation scores of
the deployed INT8 model -> TensorRT engine (when TensorRT is installed) -> parts/<part>/v<N>/ with a
report, and `current` switched to it.

Interrupted (Ctrl-C, a lost camera, a full disk)? Rerun the same command: finished stages are kept in
<work>/<part>/state.json. Captured images (<work>/<part>/captured/) are never deleted, not even by --restart.

examples:
  edge_ad calibrate --part flange --source csi://0
  edge_ad calibrate --part flange --source /data/flange_good/ --recipe textured
  edge_ad calibrate --part flange --source /data/flange_good/ --defects /data/flange_bad/
"""


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge_ad.calibrate.pipeline import Job, calibrate
    from edge_ad.calibrate.recipe import load_recipe
    from edge_ad.station.config import CameraConfig, load_station_config

    overrides = parse_overrides(args.set)
    if args.n is not None:
        overrides["capture.n"] = args.n
    recipe = load_recipe(args.recipe, overrides)
    camera, roi, parts_root, source = CameraConfig(), None, args.parts_root, args.source
    if args.station:
        station = load_station_config(args.station)
        camera, roi = station.camera, station.roi
        parts_root = parts_root or station.parts_dir
        source = source or station.camera.source
    defects = Path(args.defects) if args.defects else None
    if defects is not None and not defects.is_dir():
        raise EdgeAdError(f"--defects: folder not found: {defects}")
    job = Job(part=args.part, recipe=recipe, source=source, defects=defects,
              parts_root=Path(parts_root or DEFAULT_PARTS_ROOT), work=Path(args.work), camera=camera, roi=roi,
              force=args.force)
    res = calibrate(job, restart=args.restart)
    print(f"report: {res.bundle / 'report.md'}")
    print(f"run it: edge_ad run --config STATION.yaml (part: {args.part}, parts_dir: {job.parts_root})  |  "
          f"try it: edge_ad predict IMAGE --model {job.parts_root / args.part / B.CURRENT}")
    return 0


def readiness_line(man: dict) -> str:
    """'READY: ...' / 'NOT READY: ...' from a bundle manifest ('readiness unknown' for bundles made before it existed)."""
    rd = man.get("readiness")
    if not rd:
        return "readiness unknown (bundle made before readiness verdicts)"
    return ("READY" if rd.get("ready") else "NOT READY") + f": {rd.get('reason', '')}"


def _summary(man: dict) -> str:
    m = man.get("metrics", {})
    rd = man.get("readiness") or {}
    bits = [("ready" if rd.get("ready") else "NOT READY") if rd else "readiness unknown",
            f"threshold {man.get('threshold', float('nan')):.5g}", f"{man.get('method', '?')} "
            f"{'x'.join(str(s) for s in man.get('input_size', []))}"]
    if "split" in man:
        bits.append(f"train {man['split'].get('train')} / val {man['split'].get('val')}")
    fa = rd.get("false_alarms")
    if fa:
        bits.append(f"est. false alarms {fa['rate']:.1%} [{fa['ci_low']:.1%}, {fa['ci_high']:.1%}]")
    elif "val_false_alarm_rate" in m:
        bits.append(f"val false alarms {m['val_false_alarm_rate']:.1%}")
    if "image_auroc" in m:
        bits.append(f"defect AUROC {m['image_auroc']:.3f}, F1 {m.get('f1', float('nan')):.3f}")
    bits.append("engine" if (man.get("deployed") or {}).get("engine") else "no engine")
    return ", ".join(bits)


def cmd_parts_list(args: argparse.Namespace) -> int:
    root = Path(args.parts_root)
    parts = B.list_parts(root)
    if not parts:
        print(f"no parts in {root} (make one with `edge_ad calibrate --part NAME --source ...`)")
        return 0
    for part in parts:
        cur = B.current_version(root, part)
        vers = " ".join(f"v{v}" + ("*" if v == cur else "") for v in B.versions(root, part))
        line = f"{part}: current {'v' + str(cur) if cur else 'none'}; versions {vers}"
        if cur:
            man = B.read_manifest(root / part / f"v{cur}")
            line += f"; {man.get('created', '?')}; {_summary(man)}"
        print(line)
    return 0


def cmd_parts_show(args: argparse.Namespace) -> int:
    root = Path(args.parts_root)
    vers = B.versions(root, args.part)
    if not vers:
        raise EdgeAdError(f"no part {args.part!r} in {root} (parts there: {', '.join(B.list_parts(root)) or 'none'})")
    cur = B.current_version(root, args.part)
    print(f"part {args.part} in {root} (current: {'v' + str(cur) if cur else 'none'}; * marks it)")
    for v in vers:
        b = root / args.part / f"v{v}"
        man = B.read_manifest(b)
        bad = B.verify(b)
        state = "files ok" if not bad else f"CHANGED OR MISSING: {', '.join(bad)}"
        print(f"{'*' if v == cur else ' '} v{v}  {man.get('created', '?')}  {_summary(man)}  [{state}]")
    for left in B.leftovers(root, args.part):
        print(f"  {left.name}  left by a writer that was killed (removed by the next bundle write)")
    show = args.version or cur or vers[-1]
    if show not in vers:
        raise EdgeAdError(f"part {args.part} has no v{show}")
    b = root / args.part / f"v{show}"
    man = B.read_manifest(b)
    detail = {"bundle": str(b.resolve()), "readiness": readiness_line(man),
              "detection_of_synthetic_defects": (man.get("readiness") or {}).get("detection"),
              "picked": (man.get("selection") or {}).get("why"), "deployed": man.get("deployed"),
              "threshold_source": man.get("threshold_source"),
              "metrics": man.get("metrics"), "capture": man.get("capture"), "engine": man.get("engine"),
              "stage_seconds": man.get("stage_seconds"), "warnings": man.get("warnings"),
              "report": str(b / "report.md")}
    print(f"\nv{show}:")
    print(yaml.safe_dump(detail, sort_keys=False, default_flow_style=None).rstrip())
    return 0


def cmd_parts_rollback(args: argparse.Namespace) -> int:
    root = Path(args.parts_root)
    before = B.current_version(root, args.part)
    if not B.versions(root, args.part):
        raise EdgeAdError(f"no part {args.part!r} in {root}")
    version = B.rollback(root, args.part, args.to)
    print(f"part {args.part}: current v{before} -> v{version}. A running station picks it up on SIGHUP "
          "(systemctl reload edge_ad).")
    return 0


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add `calibrate` and `parts` to the edge_ad command line; returns `parts`' actions (fleet adds `publish`)."""
    p = sub.add_parser("calibrate", help="new part: good images -> trained, INT8, thresholded part bundle",
                       description=CALIBRATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", required=True, help="part name (letters, digits, _ - .): the bundle goes to <parts-root>/<part>/v<N>/")
    p.add_argument("--source", help="where good images come from: an image folder, a video file, or a camera URI "
                   "(csi://0, /dev/video0, 0, rtsp://...). Not needed to continue once capture has finished")
    p.add_argument("--recipe", help=f"a packaged recipe by name ({', '.join(packaged_recipes())}; default: default) "
                   "or a recipe YAML file (templates: calibration/*.yaml)")
    p.add_argument("--defects", help="folder of labelled defect images: the threshold becomes F1-optimal over "
                   "validation good + these, and the report shows defect scores")
    p.add_argument("--parts-root", help=f"folder of part bundles (default: {DEFAULT_PARTS_ROOT}, or parts_dir of --station)")
    p.add_argument("--work", default=DEFAULT_WORK, help=f"working folder: <work>/<part>/ holds captured images, "
                   f"stage outputs and state.json (default: {DEFAULT_WORK})")
    p.add_argument("--n", type=int, help="good images to capture (default: capture.n of the recipe, 200)")
    p.add_argument("--station", help="station YAML: capture with its camera settings and roi (and its source / "
                   "parts_dir unless given)")
    p.add_argument("--restart", action="store_true", help="redo every stage (captured images are kept and reused; "
                   "to capture a fresh set use another --work or move <work>/<part>/captured away)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. --set train.epochs=5")
    p.add_argument("--force", action="store_true", help="go on with fewer validation images than a meaningful "
                   "threshold needs (split.min_val); the report and the bundle say so")
    p.set_defaults(func=cmd_calibrate)

    parts = sub.add_parser("parts", help="list part bundles, show one, roll back to an earlier version",
                           description="Part bundles live in <parts-root>/<part>/v<N>/; `current` points at the one "
                                       "a station runs.")
    psub = parts.add_subparsers(dest="parts_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--parts-root", default=DEFAULT_PARTS_ROOT, help=f"folder of part bundles (default: {DEFAULT_PARTS_ROOT})")
    q = psub.add_parser("list", parents=[common], help="every part: current version, versions, threshold, metrics")
    q.set_defaults(func=cmd_parts_list)
    q = psub.add_parser("show", parents=[common], help="one part: every version with its metrics and file check, "
                        "details of the current one")
    q.add_argument("part")
    q.add_argument("--version", type=int, help="show details of this version instead of the current one")
    q.set_defaults(func=cmd_parts_show)
    q = psub.add_parser("rollback", parents=[common], help="switch `current` to an earlier version "
                        "(a running station reloads on SIGHUP)")
    q.add_argument("part")
    q.add_argument("--to", type=int, metavar="N", help="version to switch to (default: the newest older than current)")
    q.set_defaults(func=cmd_parts_rollback)
    return psub
