"""Write constraints.txt: the exact versions of everything `pip install -e .[train,mqtt,web,dev]` pulls, as installed
here, so tools/setup.sh and jetson/install.sh (`pip install -c constraints.txt`) reproduce the tested set.

Run after upgrading a package and passing the suite: python tools/refresh_constraints.py (then commit the file).
Pure-Python wheels are pinned for every machine; compiled ones only for this machine's architecture (a Jetson's
aarch64 wheels, and JetPack's numpy<2, are its own); a release that does not support the Jetson's Python 3.10 is
pinned only for the Pythons it supports.
"""

from __future__ import annotations

import argparse
import platform
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("train", "mqtt", "web", "fleet", "dev")  # jetson: cuda-python and Jetson.GPIO install only on the device
JETSON_PYTHON = "3.10"  # JetPack 6's Python: a pin whose release does not support it gets a python_version marker
HEADER = """\
# Versions the test suite passed with ({where}); written by tools/refresh_constraints.py, do not edit by hand.
# Used as `pip install -c constraints.txt ...` by tools/setup.sh and jetson/install.sh.
"""


def closure(root: str, extras: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """Every installed distribution `root[extras]` requires, transitively (markers evaluated for this machine)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [(root, set(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here: nothing to pin
        key = canonical(dist.metadata["Name"])
        if key in seen and not wanted:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                if canonical(req.name) not in seen or req.extras:
                    todo.append((req.name, set(req.extras)))
    return seen


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_pure(dist: metadata.Distribution) -> bool:
    wheel = dist.read_text("WHEEL") or ""
    return "Root-Is-Purelib: true" in wheel


def line(dist: metadata.Distribution) -> str:
    """name==version (local label such as +cpu dropped: ==2.13.0 matches it) with the markers where it applies."""
    version = dist.version.split("+")[0]
    markers = []
    if not is_pure(dist):
        markers.append(f'platform_machine == "{platform.machine()}"')
    requires_python = SpecifierSet(dist.metadata.get("Requires-Python") or "")
    if not requires_python.contains(JETSON_PYTHON):  # e.g. numpy 2.4 needs 3.11: the pin does not apply on 3.10
        markers += [f'python_version {s.operator} "{s.version}"' for s in requires_python]
    name = dist.metadata["Name"]
    return f"{name}=={version}" + (f"; {' and '.join(markers)}" if markers else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "constraints.txt"))
    args = ap.parse_args()
    dists = closure("edge_ad", EXTRAS)
    dists.pop("edge-ad", None)
    where = f"Python {platform.python_version()}, {platform.machine()}"
    text = HEADER.format(where=where) + "".join(line(d) + "\n" for _, d in sorted(dists.items()))
    Path(args.out).write_text(text)
    print(f"{args.out}: {len(dists)} packages")


if __name__ == "__main__":
    main()
