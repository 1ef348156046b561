"""Versioned part bundles: parts/<part>/v<N>/ written to a temp dir and renamed; `current` is a symlink
switched atomically, so a running service never sees a half-written bundle (torch-free).

A writer killed half-way leaves `.incoming-<pid>-*` (or `.current.<pid>.tmp`); the next write removes those whose
process is gone, and `leftovers()` lists them meanwhile. A manifest may carry `staging`, a fingerprint of what
was staged, so a writer that was killed after the rename can tell on its rerun that the version already exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from edge_ad import rejudge
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json

MANIFEST = "manifest.json"
RUNTIME_MANIFESTS = ("model.json", "model_fp32.json")  # each graph's threshold lives in its own model.json
FILE_MODE, DIR_MODE = 0o644, 0o755  # bundles are written by calibrate and read by the service's own user
CURRENT = "current"
INCOMING = ".incoming-"
LOCK = ".lock"  # parts/<part>/.lock: fcntl lock held while a version is written or `current` switched
WRITE_TRIES = 100  # a writer that finds its version number taken (a writer without the lock) takes the next one
_VERSION = re.compile(r"^v(\d+)$")
_WRITER_PID = re.compile(r"^(?:\.incoming-|\.current\.)(\d+)[-.]")
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_part_name(part: str) -> str:
    if not _PART_NAME.match(part):
        raise EdgeAdError(f"invalid part name {part!r}: use letters, digits, '_', '-', '.' (max 64)")
    return part


def versions(root: str | Path, part: str) -> list[int]:
    d = Path(root) / part
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if p.is_dir() and (m := _VERSION.match(p.name)))


def current_version(root: str | Path, part: str) -> int | None:
    link = Path(root) / part / CURRENT
    if not link.is_symlink():
        return None
    m = _VERSION.match(os.readlink(link))
    return int(m.group(1)) if m else None


_held: dict[str, list] = {}  # lock path -> [RLock, open file or None, depth]: re-entrant in this process
_held_guard = threading.Lock()


@contextlib.contextmanager
def part_lock(root: str | Path, part: str):
    """One writer per part across processes (fcntl lock on parts/<part>/.lock) and threads; re-entrant, so a
    threshold version (write + switch) holds it once across both. Released when the holder dies."""
    d = Path(root) / check_part_name(part)
    d.mkdir(parents=True, exist_ok=True)
    key = str((d / LOCK).resolve())
    with _held_guard:
        entry = _held.setdefault(key, [threading.RLock(), None, 0])
    with entry[0]:
        if entry[2] == 0:
            f = open(key, "a")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except BaseException:
                f.close()
                raise
            entry[1] = f
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                fcntl.flock(entry[1].fileno(), fcntl.LOCK_UN)
                entry[1].close()
                entry[1] = None


def _expect_current(root: str | Path, part: str, expect: int | None) -> None:
    """Refuse a change made while looking at v<expect> when `current` has moved on since (calibrate, rollback)."""
    if expect is None:
        return
    cur = current_version(root, part)
    if cur != expect:
        raise EdgeAdError(f"part {part}: current is {'v' + str(cur) if cur else 'none'}, not v{expect} that this "
                          f"change was made for (switched since): nothing changed; reload the station or look again")


def switch_current(root: str | Path, part: str, version: int, expect: int | None = None) -> Path:
    """Point `current` at v<version> atomically (new symlink, then rename over the old one), under the part's lock;
    with `expect`, only while `current` is still v<expect>."""
    d = Path(root) / part
    with part_lock(root, part):
        _expect_current(root, part, expect)
        if not (d / f"v{version}").is_dir():
            raise EdgeAdError(f"part {part} has no version v{version} (have: {', '.join(f'v{v}' for v in versions(root, part)) or 'none'})")
        tmp = d / f".{CURRENT}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(f"v{version}", tmp)
        os.replace(tmp, d / CURRENT)
    return d / CURRENT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def leftovers(root: str | Path, part: str) -> list[Path]:
    """Temp folders and links of writers that died half-way (their process is gone), oldest name first."""
    d = Path(root) / part
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        if not p.name.startswith((INCOMING, f".{CURRENT}.")):
            continue
        m = _WRITER_PID.match(p.name)
        if m is None or not _alive(int(m.group(1))):  # no pid in the name: an older edge_ad's, long dead
            out.append(p)
    return sorted(out)


def clean_leftovers(root: str | Path, part: str) -> list[Path]:
    """Remove what leftovers() lists; returns what was removed."""
    gone = leftovers(root, part)
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


def find_staged(root: str | Path, part: str, staging: str) -> int | None:
    """The intact version whose manifest records this staging fingerprint (None: not written yet)."""
    for v in reversed(versions(root, part)):
        b = Path(root) / part / f"v{v}"
        try:
            if read_manifest(b).get("staging") == staging and not verify(b):
                return v
        except (EdgeAdError, OSError, ValueError):
            continue
    return None


def write_bundle(root: str | Path, part: str, files: dict[str, Path], manifest: dict, activate: bool = True) -> Path:
    """Copy files into a new parts/<part>/v<N>/ with a manifest of hashes; optionally switch `current`.
    Leftovers of writers that died are removed first."""
    check_part_name(part)
    d = Path(root) / part
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeAdError(f"could not write bundle for part {part} in {d}: {e.strerror or e}") from None
    with part_lock(root, part):
        final = _write_version(root, part, files, manifest)
        if activate:
            switch_current(root, part, int(final.name[1:]))
    return final


def _write_version(root: str | Path, part: str, files: dict[str, Path], manifest: dict) -> Path:
    """The next free v<N> with these files and a manifest of hashes (the caller holds the part's lock)."""
    d = Path(root) / part
    tmp = None
    try:
        clean_leftovers(root, part)
        tmp = Path(tempfile.mkdtemp(prefix=f"{INCOMING}{os.getpid()}-", dir=d))
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes 0700: the service user must read the bundle
        hashes = {}
        for name, src in files.items():
            src = Path(src)
            if not src.is_file():
                raise EdgeAdError(f"bundle file missing: {src}")
            shutil.copyfile(src, tmp / name)
            os.chmod(tmp / name, FILE_MODE)
            hashes[name] = sha256(tmp / name)
        version = (max(versions(root, part), default=0)) + 1
        for _ in range(WRITE_TRIES):
            doc = {**manifest, "part": part, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "files": hashes}
            (tmp / MANIFEST).write_text(json.dumps(doc, indent=1, default=str))
            os.chmod(tmp / MANIFEST, FILE_MODE)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            final = d / f"v{version}"
            try:
                os.rename(tmp, final)  # fails rather than overwrite if a writer without the lock took the number
                break
            except OSError:
                if not final.exists():
                    raise
                version = max(version, *versions(root, part)) + 1
        else:
            raise EdgeAdError(f"could not write bundle for part {part} in {d}: no free version number after "
                              f"{WRITE_TRIES} tries")
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise EdgeAdError(f"could not write bundle for part {part} in {d}: {e.strerror or e}") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def install_version(root: str | Path, part: str, version: int, src: str | Path) -> Path:
    """A bundle made elsewhere (fetched from the fleet repository) as exactly parts/<part>/v<version>/: copied into a
    temp folder, checked against its own manifest, renamed into place under the part's lock. An existing v<version>
    with the same manifest is kept; one that differs is refused (a version number names one set of files)."""
    check_part_name(part)
    src = Path(src)
    why = damage(src)
    if why:
        raise EdgeAdError(f"not installing {part} v{version}: {why}")
    man = read_manifest(src)
    if man.get("part") != part or man.get("version") != version:
        raise EdgeAdError(f"not installing {part} v{version}: its manifest says {man.get('part')} v{man.get('version')}")
    d = Path(root) / part
    final = d / f"v{version}"
    with part_lock(root, part):
        if final.is_dir():
            if (final / MANIFEST).is_file() and (final / MANIFEST).read_bytes() == (src / MANIFEST).read_bytes() \
                    and not damage(final):
                return final
            raise EdgeAdError(f"{final} exists with other files than the {part} v{version} being installed: not "
                              "replacing it (remove it, or publish under a new version)")
        clean_leftovers(root, part)
        tmp = Path(tempfile.mkdtemp(prefix=f"{INCOMING}{os.getpid()}-", dir=d))
        try:
            os.chmod(tmp, DIR_MODE)
            for name in [*man["files"], MANIFEST]:
                shutil.copyfile(src / name, tmp / name)
                os.chmod(tmp / name, FILE_MODE)
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            why = damage(tmp)
            if why:
                raise EdgeAdError(f"not installing {part} v{version}: {why}")
            os.rename(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EdgeAdError(f"could not install {part} v{version} in {d}: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def read_manifest(bundle: str | Path) -> dict:
    """A bundle's manifest.json, checked: an object whose `files` map plain file names (no paths) to hashes."""
    p = Path(bundle) / MANIFEST
    if not p.is_file():
        raise EdgeAdError(f"not a part bundle (no {MANIFEST}): {bundle}")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise EdgeAdError(f"{p}: unreadable bundle manifest ({str(e).splitlines()[0][:120]})") from None
    files = doc.get("files", {}) if isinstance(doc, dict) else None
    if not (isinstance(files, dict) and all(isinstance(n, str) and isinstance(h, str) and n not in ("", ".", "..")
                                            and "/" not in n and "\\" not in n for n, h in files.items())):
        raise EdgeAdError(f"{p}: not a bundle manifest (expected an object whose `files` maps file names to hashes)")
    return doc


def verify(bundle: str | Path) -> list[str]:
    """Names of files whose hash does not match the manifest (empty when intact)."""
    b = Path(bundle)
    return [n for n, h in read_manifest(b).get("files", {}).items() if not (b / n).is_file() or sha256(b / n) != h]


def resolve(root: str | Path, part: str) -> Path:
    """The bundle `current` points at, fully resolved (so a later switch does not move it under a reader)."""
    link = Path(root) / part / CURRENT
    if not link.exists():
        raise EdgeAdError(f"part {part} has no current bundle in {root} (run `edge_ad calibrate --part {part}`)")
    return link.resolve()


def damage(bundle: str | Path) -> str:
    """Why a bundle must not run ("" when it is intact): missing, unreadable manifest, or files that differ."""
    b = Path(bundle)
    if not b.is_dir():
        return f"{b} does not exist"
    try:
        bad = verify(b)
    except EdgeAdError as e:  # names the manifest already
        return str(e)
    except OSError as e:
        return f"{b}: cannot read it ({e.strerror or e})"
    return f"{', '.join(bad)} missing or changed since it was written" if bad else ""


def rollback(root: str | Path, part: str, version: int | None = None, expect: int | None = None) -> int:
    """Switch `current` to the given version, or to the newest intact one older than the current; a version whose
    files are missing or changed is refused with the reason. Under the part's lock; with `expect`, only while
    `current` is still v<expect> (the version the operator was looking at)."""
    d = Path(root) / part
    with part_lock(root, part):
        _expect_current(root, part, expect)
        if version is None:
            cur = current_version(root, part)
            older = [v for v in versions(root, part) if cur is None or v < cur]
            if not older:
                raise EdgeAdError(f"part {part} has no version older than v{cur} to roll back to")
            why = {v: damage(d / f"v{v}") for v in older}
            intact = [v for v in older if not why[v]]
            if not intact:
                raise EdgeAdError(f"part {part}: no intact version older than v{cur} to roll back to ("
                                  + "; ".join(f"v{v}: {why[v]}" for v in older) + ")")
            version = intact[-1]
        elif (d / f"v{version}").is_dir():
            why_not = damage(d / f"v{version}")
            if why_not:
                raise EdgeAdError(f"part {part}: not rolling back to v{version}: {why_not}")
        switch_current(root, part, version)
    return version


class NeedsConfirmation(EdgeAdError):
    """A threshold change far outside what calibration measured: refused unless the operator confirms it."""


def _read_scores(bundle: Path, man: dict) -> dict | None:
    """The bundle's scores.json (validation and synthetic scores), None when it has none or it does not parse."""
    if "scores.json" not in man.get("files", {}):
        return None
    try:
        doc = json.loads((bundle / "scores.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_threshold_version(root: str | Path, part: str, threshold: float, who: str, activate: bool = True,
                            from_version: int | None = None, confirm: bool = False,
                            rules: rejudge.ThresholdRules | None = None) -> Path:
    """A new version of v<from_version> (default: the current one) that differs only in its alarm threshold (every
    runtime manifest, i.e. model.json and model_fp32.json, and the bundle manifest), so the change is versioned like a
    calibration: who, when, old and new value are recorded; rollback undoes it.

    Fails closed: under the part's lock, `current` must still be v<from_version>; a threshold outside the window of
    the stored validation scores (rules.range_multiple) needs `confirm`; readiness and the threshold-dependent metrics
    are re-judged at the new threshold (or marked not judged), and a change that would make a ready bundle not ready
    is refused."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
        raise EdgeAdError(f"threshold must be a finite number > 0, got {threshold!r}")
    threshold, rules = float(threshold), rules or rejudge.ThresholdRules()
    with part_lock(root, part):
        if from_version is None:
            src = resolve(root, part)
        else:
            _expect_current(root, part, from_version)
            src = Path(root) / part / f"v{from_version}"
        why = damage(src)
        if why:
            raise EdgeAdError(f"bundle {src} is damaged ({why}): not copying it")
        man = read_manifest(src)
        if "model.json" not in man.get("files", {}):
            raise EdgeAdError(f"bundle {src} has no model.json: it has no threshold to change")
        info = json.loads((src / "model.json").read_text())
        old = float(info["threshold"])
        scores = _read_scores(src, man)
        win = rejudge.window(rejudge.val_scores(scores), rules)
        if not confirm and (win is None or not win[0] <= threshold <= win[1]):
            where = ("the bundle stores no validation scores to compare it with" if win is None else
                     f"calibration measured validation scores that speak for {win[0]:.5g} .. {win[1]:.5g} "
                     f"(scores widened by {rules.range_multiple:g} times their range)")
            raise NeedsConfirmation(f"threshold {threshold:.6g} (now {old:.6g}) is outside what calibration measured: "
                                    f"{where}; confirm to set it anyway")
        readiness = rejudge.readiness_at(man.get("readiness"), scores, threshold)
        if readiness["ready"] is False and (man.get("readiness") or {}).get("ready") is not False:
            raise EdgeAdError(f"not setting threshold {threshold:.6g}: the bundle would not be ready at it "
                              f"({readiness['reason']})")
        change = {"who": who, "when": datetime.now().astimezone().isoformat(timespec="seconds"), "old": old,
                  "new": threshold, "from_version": src.name, "confirmed_outside_window": bool(confirm and (
                      win is None or not win[0] <= threshold <= win[1]))}
        info["threshold"] = threshold
        keep = {k: v for k, v in man.items() if k not in ("part", "version", "created", "files")}
        keep.update(threshold=threshold, threshold_source=f"changed by {who}", threshold_change=change,
                    threshold_history=[*man.get("threshold_history", []), change], readiness=readiness,
                    metrics=rejudge.metrics_at(man.get("metrics"), scores, threshold))
        with tempfile.TemporaryDirectory(prefix="edge_ad-threshold-") as tmp:
            files = {name: src / name for name in man.get("files", {})}
            for name in RUNTIME_MANIFESTS:
                if name in files:
                    doc = info if name == "model.json" else json.loads((src / name).read_text())
                    doc["threshold"] = threshold
                    files[name] = atomic_write_json(Path(tmp) / name, doc)
            return write_bundle(root, part, files, keep, activate)


def list_parts(root: str | Path) -> list[str]:
    r = Path(root)
    return sorted(p.name for p in r.iterdir() if p.is_dir() and versions(r, p.name)) if r.is_dir() else []
