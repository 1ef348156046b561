import os
import subprocess
import sys

import pytest

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError


def make_files(tmp_path, text):
    f = tmp_path / f"model_{text}.onnx"
    f.write_text(text)
    return {"model.onnx": f}


def test_versions_current_and_rollback(tmp_path):
    root = tmp_path / "parts"
    v1 = B.write_bundle(root, "flange", make_files(tmp_path, "a"), {"threshold": 1.0})
    v2 = B.write_bundle(root, "flange", make_files(tmp_path, "b"), {"threshold": 2.0})
    assert (v1.name, v2.name) == ("v1", "v2")
    assert B.versions(root, "flange") == [1, 2] and B.current_version(root, "flange") == 2
    assert B.resolve(root, "flange") == v2.resolve() and (B.resolve(root, "flange") / "model.onnx").read_text() == "b"
    man = B.read_manifest(v2)
    assert man["version"] == 2 and man["threshold"] == 2.0 and len(man["files"]["model.onnx"]) == 64
    assert B.rollback(root, "flange") == 1 and B.current_version(root, "flange") == 1
    with pytest.raises(EdgeAdError, match="no version older"):
        B.rollback(root, "flange")
    assert B.list_parts(root) == ["flange"]
    assert not [p for p in (root / "flange").iterdir() if p.name.startswith(".") and p.name != B.LOCK]  # no temp leftovers


def test_verify_detects_tampering(tmp_path):
    b = B.write_bundle(tmp_path, "p", make_files(tmp_path, "x"), {})
    assert B.verify(b) == []
    (b / "model.onnx").write_text("changed")
    assert B.verify(b) == ["model.onnx"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(EdgeAdError, match="bundle file missing"):
        B.write_bundle(tmp_path, "p", {"model.onnx": tmp_path / "nope"}, {})
    assert os.listdir(tmp_path / "p") == [B.LOCK]  # the part's writer lock, nothing else
    with pytest.raises(EdgeAdError, match="invalid part name"):
        B.write_bundle(tmp_path, "../evil", make_files(tmp_path, "x"), {})


def test_resolve_without_bundle_is_clear(tmp_path):
    with pytest.raises(EdgeAdError, match="edge_ad calibrate"):
        B.resolve(tmp_path, "nothing")


def test_bundle_is_readable_by_other_users(tmp_path):
    from edge_ad.fileio import atomic_write

    src = tmp_path / "model.onnx"
    atomic_write(src, b"x")  # the atomic writer must not leave 0600 (the service user reads bundles)
    assert src.stat().st_mode & 0o044 == 0o044
    b = B.write_bundle(tmp_path / "parts", "p", {"model.onnx": src}, {})
    assert b.stat().st_mode & 0o755 == 0o755
    assert all(f.stat().st_mode & 0o644 == 0o644 for f in b.iterdir())


def test_file_in_place_of_parts_root_is_clear(tmp_path):
    (tmp_path / "parts").write_text("not a folder")
    with pytest.raises(EdgeAdError, match="could not write bundle"):
        B.write_bundle(tmp_path / "parts", "p", make_files(tmp_path, "x"), {})


def test_threshold_version_copies_the_current_one_with_who_when_old_and_new(tmp_path):
    import json

    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"data": {}, "scoring": {}, "threshold": 0.5, "meta": {"k": 1}}))
    fp32_json = tmp_path / "model_fp32.json"
    fp32_json.write_text(json.dumps({"data": {}, "scoring": {}, "threshold": 0.5, "meta": {"fp32": 1}}))
    files = {**make_files(tmp_path, "net"), "model.json": model_json, "model_fp32.json": fp32_json}
    B.write_bundle(tmp_path / "parts", "p", files, {"threshold": 0.5, "method": "rd", "metrics": {"f1": 0.9}})
    with pytest.raises(B.NeedsConfirmation, match="no validation scores"):  # nothing to compare it with
        B.write_threshold_version(tmp_path / "parts", "p", 0.7, "ana (web, 127.0.0.1)")
    v2 = B.write_threshold_version(tmp_path / "parts", "p", 0.7, "ana (web, 127.0.0.1)", confirm=True)
    assert v2.name == "v2" and B.current_version(tmp_path / "parts", "p") == 2 and B.verify(v2) == []
    assert json.loads((v2 / "model.json").read_text()) == {"data": {}, "scoring": {}, "threshold": 0.7, "meta": {"k": 1}}
    assert json.loads((v2 / "model_fp32.json").read_text())["threshold"] == 0.7  # every graph of the bundle agrees
    assert (v2 / "model.onnx").read_text() == "net"
    man = B.read_manifest(v2)
    change = man["threshold_change"]
    assert man["threshold"] == 0.7 and man["method"] == "rd" and man["version"] == 2
    assert man["metrics"] == {"at_threshold": 0.7}  # f1 was measured at 0.5: not carried over
    assert man["readiness"]["ready"] is None and "not judged at this threshold" in man["readiness"]["reason"]
    assert (change["who"], change["old"], change["new"], change["from_version"]) == ("ana (web, 127.0.0.1)", 0.5, 0.7, "v1")
    assert change["when"][:4].isdigit() and man["threshold_history"] == [change]
    v3 = B.write_threshold_version(tmp_path / "parts", "p", 0.6, "bo", confirm=True)
    assert [c["new"] for c in B.read_manifest(v3)["threshold_history"]] == [0.7, 0.6]
    assert B.rollback(tmp_path / "parts", "p") == 2  # undone like any version
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(EdgeAdError, match="threshold must be"):
            B.write_threshold_version(tmp_path / "parts", "p", bad, "x")
    (v2 / "model.onnx").write_text("tampered")
    with pytest.raises(EdgeAdError, match="damaged"):
        B.write_threshold_version(tmp_path / "parts", "p", 0.8, "x", confirm=True)
    assert B.versions(tmp_path / "parts", "p") == [1, 2, 3]


def test_leftovers_of_a_killed_writer_are_listed_then_cleaned_by_the_next_write(tmp_path):
    """5d: a kill mid-write leaves .incoming-*; `parts show` names it, the next write removes it."""
    root = tmp_path / "parts"
    B.write_bundle(root, "p", make_files(tmp_path, "a"), {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    killed = root / "p" / f".incoming-{dead.pid}-x1y2"
    killed.mkdir()
    (killed / "model.onnx").write_text("half")
    legacy = root / "p" / ".incoming-abc123"  # an older edge_ad's name, without a pid
    legacy.mkdir()
    busy = root / "p" / f".incoming-{os.getpid()}-live"  # a writer that still runs is left alone
    busy.mkdir()
    assert B.leftovers(root, "p") == sorted([killed, legacy])
    shown = subprocess.run([sys.executable, "-m", "edge_ad.cli", "parts", "show", "p", "--parts-root", str(root)],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and killed.name in shown.stdout and "left by a writer that was killed" in shown.stdout
    B.write_bundle(root, "p", make_files(tmp_path, "b"), {})
    assert not killed.exists() and not legacy.exists() and busy.exists()
    assert B.versions(root, "p") == [1, 2]


def test_rollback_refuses_a_damaged_version_with_the_reason(tmp_path):
    """5g: rollback to a version whose files are missing or changed is refused; plain rollback skips it."""
    root = tmp_path / "parts"
    for text in "abc":
        B.write_bundle(root, "p", make_files(tmp_path, text), {})
    (root / "p" / "v2" / "model.onnx").unlink()
    with pytest.raises(EdgeAdError, match="not rolling back to v2: model.onnx missing or changed"):
        B.rollback(root, "p", 2)
    assert B.current_version(root, "p") == 3
    assert B.rollback(root, "p") == 1  # the newest intact older version
    (root / "p" / "v1" / "model.onnx").write_text("tampered")
    B.switch_current(root, "p", 3)
    with pytest.raises(EdgeAdError, match=r"no intact version older than v3 .*v1: model.onnx missing.*v2: model.onnx missing"):
        B.rollback(root, "p")
    r = subprocess.run([sys.executable, "-m", "edge_ad.cli", "parts", "rollback", "p", "--parts-root", str(root),
                        "--to", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "not rolling back to v1" in r.stderr and "Traceback" not in r.stderr


def test_find_staged_recognises_a_written_bundle(tmp_path):
    """5e: the staging fingerprint in the manifest tells a rerun that its bundle already exists (if intact)."""
    root = tmp_path / "parts"
    B.write_bundle(root, "p", make_files(tmp_path, "a"), {"staging": "run-1"})
    v2 = B.write_bundle(root, "p", make_files(tmp_path, "b"), {"staging": "run-2"})
    assert B.find_staged(root, "p", "run-2") == 2 and B.find_staged(root, "p", "run-1") == 1
    assert B.find_staged(root, "p", "run-3") is None
    (v2 / "model.onnx").write_text("damaged")
    assert B.find_staged(root, "p", "run-2") is None  # a damaged one is written again


def test_parts_show_into_a_closed_pipe_is_quiet(tmp_path):
    """5h: `edge_ad parts show P | head -1` prints no BrokenPipeError."""
    root = tmp_path / "parts"
    for text in "abcdefgh":
        B.write_bundle(root, "p", make_files(tmp_path, text), {"metrics": {"note": "x" * 2000}})
    r = subprocess.run(f"{sys.executable} -m edge_ad.cli parts show p --parts-root {root} | head -c 10",
                       shell=True, capture_output=True, text=True, executable="/bin/bash")
    assert r.stdout.startswith("part p") and r.stderr == ""


def test_a_broken_manifest_is_one_line_naming_it(tmp_path):
    b = B.write_bundle(tmp_path, "p", make_files(tmp_path, "x"), {})
    for text, words in (("{not json", "unreadable bundle manifest"), ('["a"]', "not a bundle manifest"),
                        ('{"files": {"../../etc/passwd": "0"}}', "not a bundle manifest")):
        (b / B.MANIFEST).write_text(text)
        with pytest.raises(EdgeAdError, match=words) as e:
            B.verify(b)
        assert str(b / B.MANIFEST) in str(e.value) and "\n" not in str(e.value)
    assert "unreadable" not in B.damage(b) and "not a bundle manifest" in B.damage(b)
