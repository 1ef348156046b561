"""The layering rules of ARCHITECTURE.md, read from the source: import directions, no cycles, no torch on the station
/ runtime / scoring path, each vocabulary defined once. Static (ast), so lazy imports inside functions count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edge_ad"
ENTRY = {"edge_ad.cli", "edge_ad.__main__", "edge_ad.demo", "edge_ad.calibrate.cli", "edge_ad.config_cli"}  # commands: may import anything
# Which layers each layer may import (besides itself and the core: the top-level modules). Transitive, pointing down:
# station -> runtime; calibrate -> training, deploy, runtime, models, station's camera and its config;
# deploy -> models, runtime; training -> models.
ALLOWED = {
    "core": set(),
    "models": set(),
    "runtime": set(),
    "training": {"models"},
    "deploy": {"models", "runtime"},
    "station": {"runtime"},
    "calibrate": {"training", "deploy", "models", "runtime", "station.camera", "station.config"},
    "fleet": {"station", "runtime"},  # the station's agent (beside the loop) and the plant's publish/rollout/status
}
ENTRY_FLEET = {"edge_ad.fleet.cli"}  # `edge_ad fleet ...` and `edge_ad parts publish`
EXCEPTIONS = {  # module -> the layers it may import beyond its own layer's rule, and why
    "edge_ad.runtime.torch_session": {"models"},  # the torch session runs a model.pt: it is the runtime's torch part
}
KNOWN_DUPLICATES: set[frozenset[str]] = set()  # vocabularies still written twice (none now): drop each when fixed
TORCH_FREE = ("edge_ad.station", "edge_ad.runtime", "edge_ad.scoring", "edge_ad.metrics", "edge_ad.data",
              "edge_ad.fleet")
TORCH_OK = {"edge_ad.runtime.torch_session"}
TORCH_LIBS = {"torch", "torchvision", "torch_pruning", "efficientnet_lite_pytorch"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text())
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module) if p)
            out.append((mod, node.lineno))
            # `from edge_ad.station import camera`: the submodule is what is imported
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names if (PKG.parent / f"{mod}.{a.name}".replace(
                ".", "/")).with_suffix(".py").is_file() or (PKG.parent / f"{mod}.{a.name}".replace(".", "/")).is_dir()]
    return out


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "core"


def allowed(src: str, dst: str) -> bool:
    src_entry, dst_entry = src in ENTRY | ENTRY_FLEET, dst in ENTRY | ENTRY_FLEET
    if dst_entry:  # nothing below an entry point imports it
        return src_entry
    if src_entry or dst == "edge_ad":
        return True
    a, b = layer(src), layer(dst)
    if b in ("core", a):
        return a != "core" or b == "core"
    rules = ALLOWED[a] | EXCEPTIONS.get(src, set())
    return b in rules or ".".join(dst.split(".")[1:3]) in rules


def test_imports_point_down():
    bad = [f"{src}:{line} imports {dst}" for src, path in MODULES.items() for dst, line in imports(path)
           if dst.startswith("edge_ad") and not allowed(src, dst)]
    assert not bad, "imports against the layering of ARCHITECTURE.md:\n" + "\n".join(bad)


def test_runtime_and_station_never_import_training():
    bad = [f"{src}:{line} imports {dst}" for src, path in MODULES.items() if layer(src) in ("runtime", "station")
           for dst, line in imports(path) if dst.startswith(("edge_ad.training", "edge_ad.calibrate"))]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    """Module-level imports only (a lazy import inside a function is how a cycle is broken on purpose)."""
    graph = {m: {d for d, _ in imports(p, top_level_only=True) if d in MODULES and d != m} for m, p in MODULES.items()}
    for m, deps in graph.items():  # `import edge_ad.x.y` also runs edge_ad.x's __init__: not an edge we count
        graph[m] = {d for d in deps if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_no_torch_on_the_station_runtime_scoring_path():
    """No torch import in these modules, not even a lazy one; nor in what they import at module level."""
    bad = []
    for src, path in MODULES.items():
        if src.startswith(TORCH_FREE) and src not in TORCH_OK:
            bad += [f"{src}:{line} imports {dst}" for dst, line in imports(path) if dst.split(".")[0] in TORCH_LIBS]
    assert not bad, "\n".join(bad)
    code = ("import sys, edge_ad.station.loop, edge_ad.station.web.app, edge_ad.runtime.detector, edge_ad.scoring, "
            "edge_ad.metrics, edge_ad.data, edge_ad.fleet.agent, edge_ad.fleet.client; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % TORCH_LIBS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def vocabularies() -> dict[frozenset, list[str]]:
    """Every module-level NAME = (tuple / list / set / frozenset of two or more strings), by its set of names."""
    found: dict[frozenset, list[str]] = defaultdict(list)
    for src, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
                node.target if isinstance(node, ast.AnnAssign) else None
            value = node.value if target is not None else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("frozenset", "set", "tuple") \
                    and value.args:
                value = value.args[0]
            if isinstance(target, ast.Name) and target.id.isupper() and isinstance(value, (ast.Tuple, ast.List, ast.Set)) \
                    and len(value.elts) >= 2 and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                                     for e in value.elts):
                found[frozenset(e.value for e in value.elts)].append(f"{src}.{target.id}")
    return found


def test_each_vocabulary_is_defined_once():
    """The same set of allowed names (BACKENDS, PRECISIONS, ...) written twice drifts apart: define once, import."""
    found = vocabularies()
    twice = {frozenset(names) for names in found.values() if len(names) > 1}
    assert twice == KNOWN_DUPLICATES, "vocabularies defined more than once: " + "; ".join(
        ", ".join(sorted(n)) for n in twice - KNOWN_DUPLICATES) + " (or a known duplicate was fixed: drop it)"
    copies = []  # a named vocabulary's values written out again as a literal elsewhere (e.g. argparse choices)
    for src, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                owners = found.get(frozenset(e.value for e in node.elts), [])
                if owners and not any(o.startswith(src + ".") for o in owners):
                    copies.append(f"{src}:{node.lineno} repeats {owners[0]}")
    assert not copies, "\n".join(copies)
    by_name = defaultdict(list)
    for names in found.values():
        for full in names:
            by_name[full.rsplit(".", 1)[1]].append(full)
    same_name = [v for v in by_name.values() if len(v) > 1]
    assert not same_name, "one vocabulary name, different values: " + "; ".join(", ".join(v) for v in same_name)


def test_the_tensorrt_floor_is_defined_once():
    """In runtime/tensorrt.py (the runtime refuses older engines; deploy may import the runtime, not the reverse)."""
    from edge_ad.runtime.tensorrt import MIN_TENSORRT_VERSION as floor

    hits = [f"{src}:{n.lineno}" for src, path in MODULES.items() for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and n.value in (floor, tuple(int(p) for p in floor.split(".")[:2]))]
    assert [h.split(":")[0] for h in hits] == ["edge_ad.runtime.tensorrt"], hits
    from edge_ad.deploy.trt_ops import DEFAULT_TRT_VERSION
    from edge_ad.runtime.tensorrt import MIN_TENSORRT, MIN_TENSORRT_VERSION

    assert DEFAULT_TRT_VERSION is MIN_TENSORRT_VERSION and MIN_TENSORRT == (8, 6)


def test_progress_bars_go_through_the_one_helper():
    """tqdm only via edge_ad/progress.py, which keeps bars off the journal and CI logs (stderr not a TTY)."""
    users = {src for src, path in MODULES.items() for dst, _ in imports(path) if dst.split(".")[0] == "tqdm"}
    assert users == {"edge_ad.progress"}
