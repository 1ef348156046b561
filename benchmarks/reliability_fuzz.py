"""Fuzzed images, station/train/recipe YAML and model.json through the real loaders: one row of the fault harness."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from reliability_kit import ROOT, Env, fresh, outcome  # noqa: E402




# ------------------------------------------------------------------------------------------------ fuzz


def trial_fuzz(env: Env, args: argparse.Namespace) -> dict:
    """Mutated inputs of every kind a user hands the station: each must load or be one line naming the file."""
    from edge_ad import data as D
    from edge_ad.calibrate.recipe import load_recipe
    from edge_ad.config import load_config
    from edge_ad.runtime.detector import open_detector
    from edge_ad.station.config import load_station_config

    rng = random.Random(args.seed + 3)
    folder = fresh(env.work / "fuzz")
    det = open_detector(env.model / "model.onnx")
    per = max(args.fuzz // 5, 1)
    results: dict[str, list[str]] = {}

    def image_case(path: Path) -> None:
        det.detect(D.load_image(path))

    kinds = {
        "image": (fuzz_images(env, folder / "images", per + args.fuzz % 5, rng), image_case),
        "station_yaml": (fuzz_yaml(yaml.safe_load((ROOT / "jetson" / "station.example.yaml").read_text()),
                                   folder / "station", per, rng), load_station_config),
        "train_yaml": (fuzz_yaml(train_tree(), folder / "train", per, rng),
                       lambda p: load_config(p, {"train.epochs": 1} if rng.random() < 0.5 else None)),
        "recipe_yaml": (fuzz_yaml(yaml.safe_load((ROOT / "calibration" / "default.yaml").read_text()),
                                  folder / "recipe", per, rng), load_recipe),
        "model_json": (fuzz_model_json(env, folder / "model_json", per, rng), lambda p: open_detector(p.parent)),
    }
    bad_examples = []
    for kind, (paths, load) in kinds.items():
        results[kind] = []
        for path in paths:
            how = outcome(lambda: load(path), path)
            results[kind].append(how)
            if how.startswith("bad") and len(bad_examples) < 5:
                bad_examples.append(f"{kind} {path.name}: {how}")
    cli_bad = fuzz_cli_sample(env, kinds, rng)
    n = sum(len(v) for v in results.values())
    bad = sum(h.startswith("bad") for v in results.values() for h in v)
    row = {"cases": n, "failures": bad + cli_bad, "tracebacks": bad,
           "one_line_errors": sum(h == "clean" for v in results.values() for h in v),
           "accepted": sum(h == "ok" for v in results.values() for h in v), "cli_sample_tracebacks": cli_bad}
    row.update({f"{k}_cases": len(v) for k, v in results.items()})
    row["note"] = "; ".join(bad_examples) or "loaders called in-process; 15 of them also through the CLI"
    return row


def train_tree() -> dict:
    from edge_ad.config import Config, to_dict

    return to_dict(Config())


WILD = [None, True, False, -1, 0, 1, 7, 2 ** 63, -(2 ** 63), 1e308, -1e-308, float("nan"), float("inf"), "", "x" * 5000,
        "../../../etc/passwd", "csi://0", "0", [], [1, 2, 3], [[1]], [0, 0, 0, 0], {}, {"a": 1}, 3.5, "\x00\x01",
        "日本語", "{{", "%s%s%s", "rtsp://256.1.1.1:99999/x"]


def mutate_tree(tree: dict, rng: random.Random) -> object:
    """One or more structural or value mutations of a nested mapping."""
    doc = json.loads(json.dumps(tree, default=str))
    for _ in range(rng.randint(1, 3)):
        paths = list(walk(doc))
        op = rng.random()
        if not paths or op < 0.05:
            return rng.choice([[1, 2], "just text", 42, None, [{"a": 1}]])
        parent, key = rng.choice(paths)
        if op < 0.25:
            del parent[key]
        elif op < 0.75:
            parent[key] = rng.choice(WILD)
        elif op < 0.9:
            parent[f"{key}_typo"] = parent[key]
        else:
            parent[key] = {"nested": parent[key]}
    return doc


def walk(node: object, depth: int = 0):
    if isinstance(node, dict) and depth < 6:
        for k in list(node):
            yield node, k
            yield from walk(node[k], depth + 1)


def fuzz_yaml(tree: dict, folder: Path, n: int, rng: random.Random) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i:04d}.yaml"
        kind = rng.random()
        if kind < 0.6:
            text = yaml.safe_dump(mutate_tree(tree, rng), allow_unicode=True)
        elif kind < 0.85:  # corrupt YAML text
            text = yaml.safe_dump(tree)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice(":{}[]-#&*!|>'\"%@`\t\n") + text[at + rng.randint(0, 3):]
        elif kind < 0.9:
            text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg")) \
                + "camera: *g\nroi: *g\ntrain: *g\n"  # an alias bomb: a billion references
        elif kind < 0.95:
            p.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))))
            out.append(p)
            continue
        else:
            text = rng.choice(["", "---\n", "null\n", "- a\n- b\n", "42\n", "train:\n", "camera:\n  source:\n"])
        p.write_text(text)
        out.append(p)
    return out


def fuzz_images(env: Env, folder: Path, n: int, rng: random.Random) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    img = cv2.imread(str(next((env.data / "train" / "good").glob("*.png"))))
    bases = {ext: cv2.imencode(ext, img)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp")}
    odd = {"gray16.png": (img[:, :, 0].astype(np.uint16) * 257), "float_nan.tiff": nan_float(img),
           "tiny.png": img[:1, :1], "bgra.png": cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), "wide.png": img[:1]}
    out = []
    for name, arr in odd.items():
        cv2.imwrite(str(folder / name), arr)
        out.append(folder / name)
    for i in range(n - len(out)):
        ext, data = rng.choice(list(bases.items()))
        data = bytearray(data)
        op = rng.random()
        if op < 0.35:
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.6:
            data = data[:rng.randrange(len(data))]
        elif op < 0.8:
            data = patch_size(data, ext, rng)
        elif op < 0.95:
            data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        else:
            data = bytearray()
        p = folder / f"{i:04d}{ext}"
        p.write_bytes(bytes(data))
        out.append(p)
    return out


def nan_float(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32) / 255
    f[0, 0] = np.nan
    f[1, 1] = np.inf
    return f


def patch_size(data: bytearray, ext: str, rng: random.Random) -> bytearray:
    """Claim another (often absurd) size in the header: a decompression bomb or a lie."""
    w, h = rng.choice([(0, 0), (1, 1), (65535, 65535), (100000, 100000), (2 ** 31 - 1, 1), (7, 2 ** 20)])
    if ext == ".png":
        data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    elif ext == ".bmp":
        data[18:26] = (w % 2 ** 31).to_bytes(4, "little") + (h % 2 ** 31).to_bytes(4, "little")
    elif ext == ".jpg":
        at = data.find(b"\xff\xc0")
        if at > 0:
            data[at + 5:at + 9] = (h % 65536).to_bytes(2, "big") + (w % 65536).to_bytes(2, "big")
    return data


def fuzz_model_json(env: Env, folder: Path, n: int, rng: random.Random) -> list[Path]:
    tree = json.loads((env.model / "model.json").read_text())
    out = []
    for i in range(n):
        d = folder / f"{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.onnx").unlink(missing_ok=True)
        (d / "model.onnx").symlink_to(env.model / "model.onnx")
        p = d / "model.json"
        if rng.random() < 0.85:
            p.write_text(json.dumps(mutate_tree(tree, rng), default=str))
        else:
            text = json.dumps(tree)
            at = rng.randrange(len(text))
            p.write_text(text[:at] + rng.choice('{}[]",:') + text[at + 1:])
        out.append(p)
    return out


def fuzz_cli_sample(env: Env, kinds: dict, rng: random.Random) -> int:
    """A few of the fuzzed files through the real command line: rc 0/1/2 and never a traceback."""
    bad = 0
    calls = [["predict", "--model", str(env.model), "--out", str(env.work / "fuzz" / "out"), str(p)]
             for p in rng.sample(kinds["image"][0], 5)]
    calls += [["predict", "--model", str(p.parent), "--out", str(env.work / "fuzz" / "out"),
               str(kinds["image"][0][0])] for p in rng.sample(kinds["model_json"][0], 5)]
    calls += [["run", "--config", str(p), "--max-frames", "1", "--source", str(env.good)]
              for p in rng.sample(kinds["station_yaml"][0], 5)]
    for argv in calls:
        try:
            r = subprocess.run([sys.executable, "-m", "edge_ad.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                               timeout=20)
            bad += "Traceback" in r.stderr or r.returncode not in (0, 1, 2)
        except subprocess.TimeoutExpired:
            pass  # a valid config with a live camera runs on: not an error
    return bad
