"""Shared by every benchmark: machine facts, versions, and writing results as JSON + Markdown."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from edge_ad.versions import software_versions

RESULTS = Path(__file__).parent / "results"
DATA_ROOT = Path(os.environ.get("EDGE_AD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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
