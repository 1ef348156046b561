"""edge_ad calibrate end to end on the demo part (64x64, width 16, 1 epoch), its resumability, the
quality filters, bad inputs, and `edge_ad parts list|show|rollback`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.calibrate.pipeline import STAGES, STATE_FILE, CalibrationError, Job, calibrate
from edge_ad.cli import main
from edge_ad.calibrate.quality import QualityConfig, filter_images, measure
from edge_ad.calibrate.recipe import Recipe, load_recipe
from edge_ad.station.config import CameraConfig
from model_fixtures import THREADS

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = {"data.image_size": [64, 64], "model.width": 16, "train.epochs": 3, "train.batch_size": 4,
               "train.min_steps": 0, "train.threads": THREADS, "capture.n": 40, "capture.min_images": 6,
               "quantize.calib_images": 8, "report.heatmaps": 2, "split.min_val": 4, "split.val_fraction": 0.34,
               "auto.input_size": False,
               "select.candidates": {"rd": {}}, "quantize.timing_runs": 3}


def tiny_recipe(**extra) -> Recipe:
    return load_recipe(None, {**TINY_RECIPE, **extra})


def good_images(demo_root: Path) -> list[Path]:
    return D.list_images(demo_root / "train" / "good")


def defect_folder(demo_root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for s in D.list_split(demo_root, "test"):
        if s.label:
            shutil.copy(s.path, dest / f"{s.defect}_{s.path.name}")
    return dest


def stop_after(stage: str):
    """Hook that simulates Ctrl-C right after `stage` has finished."""
    def hook(event: str, info: dict) -> None:
        if event == "done" and info["stage"] == stage:
            raise KeyboardInterrupt
    return hook


def state_of(job: Job) -> dict:
    return json.loads((job.dir / STATE_FILE).read_text())


# ----------------------------------------------------------------------------- the whole pipeline


@pytest.fixture(scope="module")
def first(demo_root, tmp_path_factory):
    """v1, made the hard way: interrupted after training, then a bundle root that turned into a file, then resumed."""
    tmp = tmp_path_factory.mktemp("calib")
    job = Job(part="disc", recipe=tiny_recipe(), source=str(demo_root / "train" / "good"),
              parts_root=tmp / "parts", work=tmp / "work")
    with pytest.raises(KeyboardInterrupt):
        calibrate(job, hook=stop_after("train"))
    model_pt = Path(state_of(job)["stages"]["train"]["outputs"]["model"])
    assert model_pt.parent == job.dir / "model" / "rd"  # each candidate trains in its own folder
    trained_at = model_pt.stat().st_mtime_ns

    def break_bundle_root(event: str, info: dict) -> None:
        if event == "start" and info["stage"] == "bundle":
            job.parts_root.write_text("a file where the bundle folder must go")
    started: list[str] = []
    with pytest.raises(CalibrationError, match="could not write bundle"):
        calibrate(job, hook=lambda e, i: (started.append(i["stage"]) if e == "start" else None, break_bundle_root(e, i)))
    after_failure = state_of(job)
    job.parts_root.unlink()
    resumed: list[str] = []
    result = calibrate(job, hook=lambda e, i: resumed.append(i["stage"]) if e == "start" else None)
    return {"job": job, "result": result, "started": started, "resumed": resumed, "after_failure": after_failure,
            "trained_at": trained_at, "model_pt": model_pt, "tmp": tmp}


def test_interrupted_calibration_resumes_without_redoing_stages(first):
    assert first["started"] == list(STAGES[3:])  # capture, split and train were not run again
    assert first["model_pt"].stat().st_mtime_ns == first["trained_at"]
    assert "bundle" not in first["after_failure"]["stages"] and "report" in first["after_failure"]["stages"]
    assert first["resumed"] == ["bundle"]
    state = state_of(first["job"])
    assert state["complete"] and state["version"] == 1 and set(state["stages"]) == set(STAGES)


def test_bundle_layout_manifest_and_threshold(first, demo_root):
    job, res = first["job"], first["result"]
    assert res.version == 1 and res.bundle == B.resolve(job.parts_root, "disc")
    names = {p.name for p in res.bundle.iterdir()}
    assert {"model.onnx", "model.json", "model_fp32.onnx", "model_fp32.json", "calibration.cache", "report.md",
            "histogram.png", "scores.json", "recipe.yaml", "manifest.json"} <= names
    assert {n for n in names if n.startswith("heatmap_")} and "model.engine" not in names  # no TensorRT here
    assert B.verify(res.bundle) == []
    man = B.read_manifest(res.bundle)
    assert man["input_size"] == [64, 64]
    choice = man["deploy_choice"]  # every variant judged and timed; the fastest within the bounds is deployed
    assert set(choice) == {"fp32", "int8_trt", "int8_cpu"} and choice["fp32"]["within_bounds"]
    fastest = min((v for v in choice if choice[v]["within_bounds"]), key=lambda v: choice[v]["ms"])
    assert man["deployed"]["variant"] == fastest
    assert man["deployed"]["precision"] == ("fp32" if fastest == "fp32" else "int8")
    assert man["recipe"]["model"]["width"] == 16 and man["recipe"]["prune"]["enabled"] is False
    assert set(man["stage_seconds"]) == set(STAGES[:-1]) and "torch" in man["versions"]
    assert "TensorRT not installed" in man["engine"]["skipped"]
    assert man["capture"]["images"] == len(good_images(demo_root)) and man["split"]["val"] == 4
    assert man["metrics"]["val_false_alarm_rate"] == 0.0  # quantile 0.99 of 4 scores, plus a 10 % margin
    info = json.loads((res.bundle / "model.json").read_text())
    assert info["threshold"] == man["threshold"] and info["meta"].get("precision", "fp32") == man["deployed"]["precision"]
    assert "validation good" in info["meta"]["threshold_source"]
    assert not info["data"]["align"] and not info["scoring"]["frame_mask"]  # a part in a fixture: neither applies
    report = (res.bundle / "report.md").read_text()
    assert "](histogram.png)" in report and f"{man['threshold']:.5g}" in report and "| train |" in report
    assert cv2.imread(str(res.bundle / "histogram.png")) is not None
    assert oct(res.bundle.stat().st_mode & 0o777) == "0o755" and oct((res.bundle / "model.onnx").stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in (job.dir / "captured").iterdir()) == [p.name for p in good_images(demo_root)]


def test_detector_on_the_bundle_scores_sensibly(first, demo_root):
    from edge_ad import metrics as M
    from edge_ad.runtime.detector import open_detector

    det = open_detector(B.resolve(first["job"].parts_root, "disc"))
    assert type(det.session).__name__ == "OrtSession" and det.threshold == first["result"].threshold
    samples = D.list_split(demo_root, "test")
    results = [(s, det.detect(D.load_image(s.path))) for s in samples]
    assert sum(r.is_anomaly for s, r in results if not s.label) <= 1  # unseen good parts pass
    masks = [D.prepare_mask(D.load_mask(s.mask_path, (128, 128)), det.info.data) for s, _ in results]
    assert M.pixel_auroc(masks, [r.anomaly_map for _, r in results]) > 0.6  # defects are where the map is hot
    broken = D.load_image(samples[0].path).copy()
    broken[40:72, 40:72] = np.random.default_rng(0).integers(0, 256, (32, 32, 3))  # a gross defect
    r = det.detect(broken)
    y, x = np.unravel_index(np.argmax(r.anomaly_map), r.anomaly_map.shape)
    assert r.is_anomaly and 16 <= y < 40 and 16 <= x < 40  # the patch, at 64 x 64 input


def onnx_parameters(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def check_defect_metrics(metrics: dict, scores: dict, threshold: float) -> None:
    """The manifest's defect metrics are those of the bundle's own scores (scores.json) at its threshold."""
    good = np.array([x["score"] for x in scores["val_good"]])
    bad = np.array([x["score"] for x in scores["defects"]])
    assert scores["threshold"] == threshold and len(good) == metrics["val_good"] and len(bad) == metrics["defects"]
    # AUROC as the Mann-Whitney statistic: P(defect scores above good), ties count half
    pairs = bad[:, None] - good[None, :]
    assert metrics["image_auroc"] == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))
    tp, fn = int(np.sum(bad >= threshold)), int(np.sum(bad < threshold))
    fp, tn = int(np.sum(good >= threshold)), int(np.sum(good < threshold))
    assert (metrics["tp"], metrics["fn"], metrics["fp"], metrics["tn"]) == (tp, fn, fp, tn)
    assert metrics["precision"] == pytest.approx(tp / (tp + fp)) and metrics["recall"] == pytest.approx(tp / (tp + fn))
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert metrics["val_false_alarm_rate"] == pytest.approx(fp / len(good))
    # F1-optimal: no cut at any observed score does better
    best = max(2 * np.sum(bad >= t) / (len(bad) + np.sum(bad >= t) + np.sum(good >= t)) for t in np.append(good, bad))
    assert metrics["f1"] == pytest.approx(best)


def test_a_kill_after_the_bundle_was_written_does_not_write_it_again(first):
    """5e: killed after v1 was renamed into place (and `current` switched) but before state.json recorded the bundle
    stage: the rerun finds v1 by the staging fingerprint in its manifest instead of writing a duplicate v2."""
    job = first["job"]
    doc = state_of(job)
    del doc["stages"]["bundle"]
    doc.update(complete=False, version=None)
    (job.dir / STATE_FILE).write_text(json.dumps(doc))
    started: list[str] = []
    res = calibrate(job, hook=lambda e, i: started.append(i["stage"]) if e == "start" else None)
    assert started == ["bundle"] and res.version == 1
    assert B.versions(job.parts_root, "disc") == [1] and B.current_version(job.parts_root, "disc") == 1
    assert len(res.manifest["staging"]) == 64 and state_of(job)["complete"]


def test_second_calibration_with_defects_and_pruning_then_rollback(first, demo_root, capsys):
    job = first["job"]
    defects = defect_folder(demo_root, first["tmp"] / "defects")
    job2 = Job(part="disc", recipe=tiny_recipe(**{"prune.enabled": True, "prune.ratio": 0.25, "prune.steps": 1,
                                                   "prune.finetune_epochs": 0}),
               source=job.source, defects=defects, parts_root=job.parts_root, work=job.work)
    res = calibrate(job2)
    assert res.version == 2 and B.current_version(job.parts_root, "disc") == 2
    man = res.manifest
    assert man["threshold_source"].startswith("F1-optimal") and man["metrics"]["defects"] == len(D.list_images(defects))
    check_defect_metrics(man["metrics"], json.loads((res.bundle / "scores.json").read_text()), man["threshold"])
    prune = json.loads((res.bundle / "model.json").read_text())["meta"]["prune"]
    assert prune["ratio"] == 0.25 and prune["steps"] == 1
    # a quarter of the channels gone: each conv keeps at most 3/4 of its weights and MACs
    assert 0 < prune["params_after"] <= 0.75 * prune["params_before"]
    assert 0 < prune["macs_after"] <= 0.75 * prune["macs_before"]
    # and the deployed graph is the pruned one: v2 (same teacher) is smaller than v1 by what pruning removed
    removed = onnx_parameters(first["result"].bundle / "model_fp32.onnx") - onnx_parameters(res.bundle / "model_fp32.onnx")
    assert removed == pytest.approx(prune["params_before"] - prune["params_after"], rel=0.05)
    assert any(n.endswith("_defect.png") for n in man["files"])

    root = str(job.parts_root)
    assert main(["parts", "list", "--parts-root", root]) == 0
    assert "disc: current v2; versions v1 v2*" in capsys.readouterr().out
    assert main(["parts", "rollback", "disc", "--parts-root", root]) == 0
    assert "current v2 -> v1" in capsys.readouterr().out
    assert B.resolve(job.parts_root, "disc").name == "v1"
    assert main(["parts", "show", "disc", "--parts-root", root]) == 0
    out = capsys.readouterr().out
    assert "* v1" in out and "  v2" in out and "files ok" in out and "F1" in out
    assert main(["parts", "rollback", "disc", "--to", "7", "--parts-root", root]) == 2
    assert "has no version v7" in capsys.readouterr().err


def test_textured_recipe_calibrates_a_gauss_bundle(demo_root, tmp_path):
    """The textured recipe (gauss: no student) goes through every stage and its bundle detects a gross defect."""
    from edge_ad.runtime.detector import open_detector

    recipe = load_recipe(ROOT / "calibration" / "textured.yaml", {k: v for k, v in TINY_RECIPE.items()
                                                                    if not k.startswith(("model.", "train.epochs"))})
    job = Job(part="tile", recipe=recipe, source=str(demo_root / "train" / "good"), parts_root=tmp_path / "parts",
              work=tmp_path / "work")
    res = calibrate(job)
    man = B.read_manifest(res.bundle)
    assert man["recipe"]["model"]["method"] == "gauss" and B.verify(res.bundle) == []
    report = (res.bundle / "report.md").read_text()
    assert "Gaussian map at stride 16 (stages 4+8+16), no student" in report
    few = [w for w in man["warnings"] if "Gaussian map was fitted on" in w]  # demo: far fewer than 400 images
    assert len(few) == 1 and few[0] in report
    det = open_detector(res.bundle)
    img = D.load_image(D.list_split(demo_root, "test")[0].path).copy()
    assert not det.detect(D.load_image(good_images(demo_root)[0])).is_anomaly
    img[40:72, 40:72] = np.random.default_rng(0).integers(0, 256, (32, 32, 3))
    assert det.detect(img).is_anomaly


def test_engine_stage_builds_or_says_why_not(first):
    from edge_ad.calibrate.job import State
    from edge_ad.calibrate.stages import stage_engine
    from edge_ad.errors import EdgeAdError

    job = Job(part="disc", recipe=tiny_recipe(**{"engine.build": "always"}), parts_root=first["job"].parts_root,
              work=first["job"].work)
    state = State(job.dir / STATE_FILE, job.fingerprint())
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EdgeAdError, match="TensorRT not installed"):
            stage_engine(job, state, None)
        pytest.skip("TensorRT not installed: building the engine needs a Jetson or GPU")
    out = stage_engine(job, state, None)
    assert Path(out.file).is_file() and out.max_score_diff_rel_threshold < 0.05


def test_one_calibration_per_part_at_a_time(first):
    import fcntl

    job = first["job"]
    with open(job.dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CalibrationError, match="another calibrate of disc is running"):
            calibrate(job)


def random_texture_part(folder: Path, n: int = 40) -> Path:
    """Good images that share nothing: smooth random textures of random scale, brightness and contrast."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = cv2.GaussianBlur(rng.normal(0, 1, (128, 128, 3)).astype(np.float32), (0, 0), rng.uniform(1, 12))
        base = (base - base.mean()) / (base.std() + 1e-6)
        img = np.clip(128 + base * rng.uniform(20, 70) + rng.uniform(-40, 40), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


READINESS_RECIPE = {**TINY_RECIPE, "data.image_size": [128, 128], "split.val_fraction": 0.25, "quantize.variants": [], "report.heatmaps": 0,
                    "train.threads": 1}


def test_readiness_is_ready_on_a_learnable_part_and_not_ready_when_defects_are_not_separated(tmp_path):
    from edge_ad.training.demo_data import make_demo_data

    part = make_demo_data(tmp_path / "demo", n_train=40, n_test_good=2, n_test_bad=3, size=128)
    runs = {}
    for name, src in (("disc", part / "train" / "good"), ("noise", random_texture_part(tmp_path / "noise"))):
        job = Job(part=name, recipe=tiny_recipe(**READINESS_RECIPE), source=str(src), parts_root=tmp_path / "parts",
                  work=tmp_path / "work")
        runs[name] = calibrate(job).manifest["readiness"]
    disc, noise = runs["disc"], runs["noise"]
    # large synthetic defects caught: 0.775 of 80 measured (seed 0, 1 thread; 8 per image on 10 goods); margin 0.175
    assert disc["ready"] is True and disc["detection"]["large"] >= 0.6 and disc["false_alarms"]["goods"] == 10
    assert noise["ready"] is False and "not separated" in noise["reason"]
    floor = tiny_recipe(**READINESS_RECIPE).calib.readiness.min_image_auroc
    assert noise["synthetic"]["image_auroc"] < floor <= disc["synthetic"]["image_auroc"]
    fa = disc["false_alarms"]  # a rate with its interval, never a bare 0.0 %
    assert fa["ci_low"] <= fa["rate"] <= fa["ci_high"] and fa["ci_high"] > 0.2  # 10 goods cannot promise more
    report = (B.resolve(tmp_path / "parts", "noise") / "report.md").read_text()
    assert "NOT READY" in report and "not separated" in report


def test_too_few_validation_images_stop_before_training_unless_forced(demo_root, tmp_path):
    job = Job(part="few", recipe=tiny_recipe(**{"split.min_val": 30, "split.val_fraction": 0.2}),
              source=str(demo_root / "train" / "good"), parts_root=tmp_path / "parts", work=tmp_path / "work")
    with pytest.raises(CalibrationError, match=r"give 4 validation images.*at least 20 \(split.min_val_few\).*--force"):
        calibrate(job)
    assert not (job.dir / "model").exists() and not job.parts_root.exists()
    job.force = True
    with pytest.raises(KeyboardInterrupt):
        calibrate(job, hook=stop_after("split"))
    assert "--force" in state_of(job)["stages"]["split"]["outputs"]["forced"]


# ----------------------------------------------------------------------------- quality filters


def test_quality_filters_count_each_reason(demo_root):
    goods = [D.load_image(p) for p in good_images(demo_root)[:20]]
    sharp = goods[0]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    over = np.clip(sharp.astype(np.int32) * 3 + 120, 0, 255).astype(np.uint8)
    under = (sharp // 12).astype(np.uint8)  # a dark outlier of a bright set
    black, flat = np.zeros_like(sharp), np.full_like(sharp, 128)
    noisy_copy = np.clip(sharp + np.random.default_rng(0).normal(0, 1.5, sharp.shape), 0, 255).round().astype(np.uint8)
    cfg = QualityConfig()
    kept, counts = filter_images(goods + [blurred, over, noisy_copy, under, black, flat, sharp], cfg)
    assert len(goods) >= 10 and kept == list(range(len(goods)))
    assert counts == {"blurred": 1, "over_exposed": 1, "under_exposed": 2, "empty": 1, "near_duplicate": 2}
    kept, counts = filter_images([sharp, blurred, sharp], QualityConfig(enabled=False))
    assert kept == [0, 1, 2] and sum(counts.values()) == 0


def test_dark_part_passes_capture_and_its_outliers_are_relative(demo_root):
    """A uniformly dark part (mean grey ~19, like black rubber) is normal input; a frame far darker than the set is not."""
    dark = [(D.load_image(p).astype(np.float32) * 0.2).round().astype(np.uint8) for p in good_images(demo_root)]
    assert len(dark) >= 10 and 10 < float(np.mean([im.mean() for im in dark])) < 25
    kept, counts = filter_images(dark, QualityConfig())
    assert kept == list(range(len(dark))) and sum(counts.values()) == 0
    darker = (dark[3] // 4).astype(np.uint8)
    kept, counts = filter_images(dark + [darker], QualityConfig())
    assert kept == list(range(len(dark))) and counts["under_exposed"] == 1


def test_histogram_without_matplotlib(tmp_path):
    from edge_ad.calibrate.report import HIST_SIZE, LINE_BGR, _histogram_cv2

    path = _histogram_cv2([1.0, 1.1, 1.2, 1.15], [2.0, 2.5], 1.5, tmp_path / "h.png", bins=10)
    img = cv2.imread(str(path))
    assert img.shape[:2] == (HIST_SIZE[1], HIST_SIZE[0])
    assert (np.abs(img.astype(int) - LINE_BGR).sum(axis=2) == 0).any()  # the threshold line is drawn


# ----------------------------------------------------------------------------- bad inputs


def folder_job(tmp_path: Path, images: list[np.ndarray], **recipe) -> Job:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(src / f"{i:03d}.png"), im)
    return Job(part="p", recipe=tiny_recipe(**recipe), source=str(src), parts_root=tmp_path / "parts",
               work=tmp_path / "work")


def test_identical_frames_are_rejected_as_duplicates(demo_root, tmp_path):
    img = D.load_image(good_images(demo_root)[0])
    job = folder_job(tmp_path, [img] * 10)
    with pytest.raises(CalibrationError, match=r"too few usable images.*near_duplicate 9.*identical"):
        calibrate(job)
    assert len(D.list_images(job.dir / "captured")) == 1  # kept, never deleted
    assert len(D.list_images(job.dir / "rejected")) == 5  # capture.keep_rejected examples
    assert state_of(job)["stages"] == {} and not job.parts_root.exists()


def test_too_few_images_then_more_continues_capture(demo_root, tmp_path):
    imgs = [D.load_image(p) for p in good_images(demo_root)]
    job = folder_job(tmp_path, imgs[:3])
    with pytest.raises(CalibrationError, match=r"too few usable images for training: 3 \(need at least 6"):
        calibrate(job)
    first = {p.name: p.stat().st_mtime_ns for p in D.list_images(job.dir / "captured")}
    assert len(first) == 3
    folder_job(tmp_path, imgs)  # the user adds images to the same folder and reruns
    with pytest.raises(KeyboardInterrupt):
        calibrate(job, hook=stop_after("capture"))
    out = state_of(job)["stages"]["capture"]["outputs"]
    assert out["images"] == len(imgs) and out["new"] == len(imgs) - 3
    assert all((job.dir / "captured" / n).stat().st_mtime_ns == t for n, t in first.items())


def test_mixed_aspect_ratios_are_allowed_with_a_warning(demo_root, tmp_path):
    imgs = [D.load_image(p) for p in good_images(demo_root)[:8]]
    imgs[::2] = [cv2.resize(im, (192, 128)) for im in imgs[::2]]
    job = folder_job(tmp_path, imgs)
    with pytest.raises(KeyboardInterrupt):
        calibrate(job, hook=stop_after("capture"))
    out = state_of(job)["stages"]["capture"]["outputs"]
    assert out["images"] == 8 and out["aspect_spread"] == pytest.approx(0.5)
    assert any("aspect ratios differ by 50%" in w for w in out["warnings"])


def test_camera_lost_mid_capture_keeps_frames(tmp_path):
    from edge_ad.training.demo_data import render_sample

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (128, 128))
    for i in range(8):
        writer.write(render_sample(0, "train", i, None, 128)[0])
    writer.release()
    cam = CameraConfig(live=True, reconnect_min_s=0.2, reconnect_max_s=0.4)
    job = Job(part="p", recipe=tiny_recipe(**{"capture.frame_timeout_s": 1.0}), source=str(video),
              parts_root=tmp_path / "parts", work=tmp_path / "work", camera=cam)

    def unplug(event: str, info: dict) -> None:
        if event == "kept" and info["count"] == 1:
            video.unlink()  # frames already buffered by the decoder still arrive, then nothing
    with pytest.raises(CalibrationError, match=r"camera .* lost \(no frame for 1 s\); kept the \d+ images.*rerun"):
        calibrate(job, hook=unplug)
    kept = D.list_images(job.dir / "captured")
    assert len(kept) >= 1 and all(p.name.startswith("cam_") for p in kept)
    with pytest.raises(CalibrationError, match="give --source"):
        calibrate(Job(part="p", recipe=job.recipe, parts_root=job.parts_root, work=job.work))


def test_bundle_root_that_is_a_file_fails_before_any_work(demo_root, tmp_path):
    job = folder_job(tmp_path, [D.load_image(p) for p in good_images(demo_root)[:2]])
    job.parts_root.write_text("")
    with pytest.raises(CalibrationError, match="exists and is not a folder.*--parts-root"):
        calibrate(job)
    assert not job.work.exists()


# ----------------------------------------------------------------------------- recipes and CLI


def test_recipes_load_and_default_matches_builtin():
    assert load_recipe(ROOT / "calibration" / "default.yaml").to_dict() == Recipe().to_dict()
    assert load_recipe(ROOT / "calibration" / "textured.yaml").config.model.method == "gauss"
    assert load_recipe(ROOT / "calibration" / "objects.yaml").config.model.method == "rd_aug"
    r = load_recipe(None, {"prune.enabled": True, "prune.ratio": 0.3})
    assert r.prune and r.config.prune.ratio == 0.3 and r.to_dict()["prune"]["enabled"] is True
    with pytest.raises(Exception, match=r"quality\.blur_min_variance: expected float"):
        load_recipe(None, {"quality.blur_min_variance": "high"})


def test_cli_calibrate_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_text("captur:\n  n: 5\n")
    assert main(["calibrate", "--part", "p", "--source", str(tmp_path), "--recipe", str(bad)]) == 2
    assert "captur: unknown section" in capsys.readouterr().err
    assert main(["calibrate", "--part", "../x", "--source", str(tmp_path), "--work", str(tmp_path / "w")]) == 2
    assert "invalid part name" in capsys.readouterr().err
    assert main(["parts", "list", "--parts-root", str(tmp_path / "none")]) == 0
    assert "no parts in" in capsys.readouterr().out


def test_cli_station_gives_camera_roi_and_parts_dir(demo_root, tmp_path, capsys):
    import yaml

    job = folder_job(tmp_path, [D.load_image(p) for p in good_images(demo_root)[:3]])
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump({"part": "p", "parts_dir": str(tmp_path / "station_parts"), "roi": [16, 8, 96, 64],
                                       "camera": {"source": job.source}}))
    assert main(["calibrate", "--part", "p", "--station", str(station), "--work", str(job.work),
                 "--set", "capture.min_images=6", "--set", "capture.n=10"]) == 2
    assert "too few usable images for training: 3" in capsys.readouterr().err
    shots = D.list_images(job.dir / "captured")
    assert len(shots) == 3 and all(D.load_image(p).shape == (64, 96, 3) for p in shots)
