"""Shared by every benchmark: machine facts, versions, and writing results as JSON + Markdown."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

from edge_ad.versions import software_versions

RESULTS = Path(__file__).parent / "results"
DATA_ROOT = Path(os.environ.get("EDGE_AD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# --smoke: every benchmark's code path on the demo part in seconds, so a benchmark that rots fails the test suite
# (tests/test_benchmarks_smoke.py). Results go to <out>/results, never to the committed tables.
SMOKE_DATASET = "demo"
SMOKE_DEMO = {"n_train": 8, "n_test_good": 3, "n_test_bad": 3, "size": 64}  # images per split, pixels
SMOKE_CONFIG = {"data.image_size": [64, 64], "model.width": 16, "train.epochs": 1, "train.batch_size": 4}
SMOKE_FRAMES = 5  # timed frames per row


def add_smoke_args(ap) -> None:
    """--smoke and --out: the same two options on every benchmark."""
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run on the demo part (seconds): checks the benchmark still works, measures nothing")
    ap.add_argument("--out", help="with --smoke: folder for its data, models and results (default: a new temp folder)")


def smoke_folder(out: str | None) -> Path:
    """The smoke run's folder: demo data in <out>/data/demo (made once), results in <out>/results."""
    global RESULTS
    from edge_ad.training.demo_data import make_demo_data

    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="edge_ad_smoke."))
    data = root / "data" / SMOKE_DATASET
    if not (data / "test").is_dir():
        make_demo_data(data, progress=False, **SMOKE_DEMO)
    RESULTS = root / "results"  # write_results/load_rows read it at call time
    print(f"smoke run in {root}", flush=True)
    return root


def smoke_model(root: Path, method: str = "rd") -> Path:
    """<root>/work/demo/<method>/model.pt as benchmarks/accuracy.py leaves it, trained now if absent."""
    from edge_ad.config import load_config
    from edge_ad.training.train import train

    pt = root / "work" / SMOKE_DATASET / method / "model.pt"
    if not pt.is_file():
        train(load_config(None, {**SMOKE_CONFIG, "model.method": method, "data.root": str(root / "data" / SMOKE_DATASET),
                                 "train.out_dir": str(pt.parent), "train.threads": 1}))
    return pt


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kb = 0
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_kb / 2**20, 1), "python": platform.python_version()}


def write_results(name: str, rows: list[dict], columns: list[tuple[str, str]], notes: str = "") -> Path:
    """benchmarks/results/<name>.json (machine, date, command, versions, rows, history) and the same table as .md.

    `history` lists every command whose rows the file still holds (runs replace only their own rows), so the
    provenance of each number lives in the results, not in the script.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(sys.argv)
    history = [h for h in load_doc(name).get("history", []) if h.get("command") != command]
    history.append({"command": command, "date": _dt.datetime.now().isoformat(timespec="seconds")})
    doc = {"machine": machine(), "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": command, "versions": software_versions(), "rows": rows, "history": history}
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1, default=float))
    (RESULTS / f"{name}.md").write_text(render_markdown(name, doc, columns, notes))
    return RESULTS / f"{name}.json"


def render_markdown(name: str, doc: dict, columns: list[tuple[str, str]], notes: str = "") -> str:
    """The result table for people: AUROC-like columns in percent, other numbers to 3 significant digits."""
    pct = {"image_auroc", "pixel_auroc", "aupro"}
    esc = lambda text: str(text).replace("|", "\\|")  # noqa: E731 - a pipe would split the Markdown cell
    lines = [f"# {name}", "", f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
             f"{doc['machine']['ram_gb']} GB RAM. Date: {doc['date']}.", "", f"Command: `{doc['command']}`", ""]
    if notes:
        lines += [notes, ""]
    if len(doc.get("history", [])) > 1:
        lines += ["Runs whose rows this table holds, oldest first:", ""]
        lines += [f"- `{h['command']}`" + (f" ({h['note']})" if h.get("note") else "") for h in doc["history"]] + [""]
    lines += ["| " + " | ".join(esc(h) for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in doc["rows"]:
        cells = []
        for key, _ in columns:
            v = r.get(key, "")
            if isinstance(v, float):
                v = f"{100 * v:.1f}" if key in pct or key.endswith("_auroc") else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
            cells.append(esc("" if v is None else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_doc(name: str) -> dict:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def load_rows(name: str) -> list[dict]:
    return load_doc(name).get("rows", [])
