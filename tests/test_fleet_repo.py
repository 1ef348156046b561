"""The bundle repository with python-tuf on real stores: publish, desired state, the station's ngclient verifying
every byte, and refusing tampered files, tampered or foreign-signed metadata, expired and rolled-back metadata, a
revoked version; key rotation signed with the off-line root key; S3 (rclone serve s3, read-only for stations) and a
plain HTTP server."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("tuf", reason="python-tuf not installed (the fleet extra: pip install 'edge_ad[fleet]')")

from edge_ad import bundle as B  # noqa: E402
from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.fleet import desired as D  # noqa: E402
from edge_ad.fleet import keys as K  # noqa: E402
from edge_ad.fleet import repo as R  # noqa: E402
from edge_ad.fleet.client import Client, Refused  # noqa: E402
from edge_ad.fleet.publish import publish_bundle, publish_desired, revoke  # noqa: E402
from edge_ad.fleet.store import FolderStore, open_store  # noqa: E402
from fleet_fixtures import Plant, fake_bundle, http_server, s3_server, station_env  # noqa: E402,F401


@pytest.fixture
def plant(tmp_path) -> Plant:
    p = Plant(tmp_path)
    fake_bundle(p.parts, "flange", "one")
    fake_bundle(p.parts, "flange", "two")
    for v in (1, 2):
        publish_bundle(p.store, p.keys, p.parts, "flange", p.expiry, v)
    publish_desired(p.store, p.keys, D.set_version(D.empty(), "flange", 1), p.expiry)
    return p


def client(plant: Plant, name: str = "cache", store=None) -> Client:
    return Client(store or plant.store, plant.work / name, plant.trusted_root)


def test_publish_then_a_station_verifies_desired_state_and_bundle(plant, tmp_path):
    c = client(plant)
    c.refresh()
    assert D.version_for(c.desired(), "flange", "line1-cam1", "") == 1
    assert sorted(c.bundle_files("flange")) == [1, 2]
    got = c.fetch_bundle("flange", 2, tmp_path / "dl")
    assert not B.damage(got) and B.read_manifest(got)["version"] == 2
    installed = B.install_version(tmp_path / "station_parts", "flange", 2, got)
    assert installed.name == "v2" and (installed / "model.onnx").read_bytes() == b"two" * 100
    assert c.fetcher.bytes > 600  # metadata and the files, counted
    # versions are immutable: the same number with other files is refused, the same files are a no-op
    (plant.parts / "flange" / "v2" / "model.onnx").write_bytes(b"changed")
    with pytest.raises(EdgeAdError, match="changed since it was written"):
        publish_bundle(plant.store, plant.keys, plant.parts, "flange", plant.expiry, 2)


def test_groups_and_stations_override_the_default():
    doc = D.set_version(D.set_version(D.empty(), "p", 1), "p", 2, group="canary")
    doc = D.set_version(doc, "p", 3, station="odd")
    assert [D.version_for(doc, "p", s, g) for s, g in (("a", ""), ("b", "canary"), ("odd", "canary"))] == [1, 2, 3]
    assert D.version_for(D.clear_group(doc, "p", "canary"), "p", "b", "canary") == 1
    assert D.version_for(doc, "other", "a", "") is None


def test_a_changed_target_file_is_refused(plant, tmp_path):
    tf = R.open_repo(plant.store).targets.signed.targets["flange/v2/model.onnx"]
    stored = plant.store.root / R.stored_target_key("flange/v2/model.onnx", tf.hashes["sha256"])
    stored.write_bytes(b"evil" * 75)  # same length as nothing; hash differs
    c = client(plant)
    with pytest.raises(Refused, match="file changed since it was signed"):
        c.fetch_bundle("flange", 2, tmp_path / "dl")


def test_changed_or_foreign_signed_metadata_is_refused(plant):
    ts = plant.store.root / "metadata" / "timestamp.json"
    good = ts.read_bytes()
    doc = json.loads(good)
    doc["signed"]["version"] += 5  # changed after signing
    ts.write_text(json.dumps(doc))
    with pytest.raises(Refused, match="wrong or missing signature"):
        client(plant, "c1").refresh()
    # signed, but with a key the root does not trust (an attacker's or a stolen key that was revoked)
    from tuf.api.metadata import Metadata

    md = Metadata.from_bytes(good)
    md.signed.version += 5
    md.signatures.clear()
    md.sign(K.generate(plant.work / "attacker.pem"))
    ts.write_bytes(R._dump(md))
    with pytest.raises(Refused, match="wrong or missing signature"):
        client(plant, "c2").refresh()


def test_expired_metadata_is_refused(plant):
    c = client(plant)
    c.refresh()  # fine now
    repo = R.open_repo(plant.store)
    repo.timestamp.signed.expires = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    repo.timestamp.signed.version += 1
    repo.timestamp.signatures.clear()
    repo.timestamp.sign(R.online_signers(plant.keys)["timestamp"])
    plant.store.put("metadata/timestamp.json", R._dump(repo.timestamp))
    with pytest.raises(Refused, match="expired metadata"):
        client(plant).refresh()
    R.resign(plant.store, plant.keys, plant.expiry)  # what the daily `edge_ad fleet resign` does
    client(plant).refresh()


def test_rolled_back_metadata_is_refused(plant):
    old = plant.store.get("metadata/timestamp.json")
    publish_desired(plant.store, plant.keys, D.set_version(D.empty(), "flange", 2), plant.expiry)
    c = client(plant)
    c.refresh()
    assert D.version_for(c.desired(), "flange", "s", "") == 2
    plant.store.put("metadata/timestamp.json", old)  # a mirror replays yesterday's (validly signed) state
    with pytest.raises(Refused, match="rolled-back metadata"):
        client(plant).refresh()


def test_a_revoked_version_is_refused_and_a_desired_one_cannot_be_revoked(plant, tmp_path):
    with pytest.raises(EdgeAdError, match="still desired"):
        revoke(plant.store, plant.keys, "flange", 1, plant.expiry)
    gone = revoke(plant.store, plant.keys, "flange", 2, plant.expiry)
    assert sorted(gone) == ["flange/v2/manifest.json", "flange/v2/model.json", "flange/v2/model.onnx"]
    with pytest.raises(Refused, match="not in the signed targets"):
        client(plant).fetch_bundle("flange", 2, tmp_path / "dl")
    with pytest.raises(EdgeAdError, match=r"names flange v2, not published"):
        publish_desired(plant.store, plant.keys, D.set_version(D.empty(), "flange", 2), plant.expiry)


def test_key_rotation_is_followed_and_the_old_key_is_refused(plant):
    c = client(plant)
    c.refresh()
    old_ts_key = K.load(K.key_path(plant.keys, "timestamp"))
    R.rotate_key(plant.store, plant.keys, plant.root_key, "timestamp", plant.expiry)
    assert list(plant.keys.glob("timestamp.pem.revoked-*"))
    c = client(plant)
    c.refresh()  # root v2 fetched, verified with root v1's key, and the new timestamp accepted
    assert json.loads((plant.work / "cache" / "metadata" / "root.json").read_text())["signed"]["version"] == 2
    repo = R.open_repo(plant.store)
    repo.timestamp.signed.version += 1
    repo.timestamp.signatures.clear()
    repo.timestamp.sign(old_ts_key)  # the revoked key no longer counts
    plant.store.put("metadata/timestamp.json", R._dump(repo.timestamp))
    with pytest.raises(Refused, match="wrong or missing signature"):
        client(plant).refresh()
    # the root key itself: the new root is signed by the old and the new root key
    R.rotate_key(plant.store, plant.keys, plant.root_key, "root", plant.expiry, plant.work / "offline" / "root2.pem")
    client(plant).refresh()
    with pytest.raises(EdgeAdError, match="needs --root-key"):
        R.rotate_key(plant.store, plant.keys, "", "targets", plant.expiry)


def test_keys_readable_by_others_are_refused(plant):
    path = K.key_path(plant.keys, "targets")
    path.chmod(0o644)
    with pytest.raises(EdgeAdError, match="readable by others"):
        K.load(path)


def test_s3_repository_read_only_for_stations_and_a_plain_http_server(s3_server, http_server, tmp_path, monkeypatch):
    store = open_store("s3://bundles/plant1", s3_server.rw_url)
    plant = Plant(tmp_path / "pub", store)
    fake_bundle(plant.parts, "flange", "one")
    publish_bundle(store, plant.keys, plant.parts, "flange", plant.expiry)
    publish_desired(store, plant.keys, D.set_version(D.empty(), "flange", 1), plant.expiry)
    for k, v in station_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    ro = open_store("s3://bundles/plant1", s3_server.ro_url)
    c = Client(ro, tmp_path / "station", plant.trusted_root)
    assert D.version_for(c.desired(), "flange", "s", "") == 1
    assert (c.fetch_bundle("flange", 1, tmp_path / "dl") / "model.onnx").read_bytes() == b"one" * 100
    with pytest.raises(EdgeAdError, match="s3 write of"):
        ro.put("metadata/timestamp.json", b"{}")  # a station's key cannot change the repository
    # the same repository as a folder behind a plain web server (it serves tmp_path/www)
    shutil.copytree(s3_server.root / "bundles" / "plant1", tmp_path / "www" / "repo")
    web = open_store(f"{http_server.url}/repo")
    c = Client(web, tmp_path / "station_http", plant.trusted_root)
    assert (c.fetch_bundle("flange", 1, tmp_path / "dl2") / "model.json").is_file()
    with pytest.raises(EdgeAdError, match="served over HTTP"):
        web.put("x", b"")


def test_a_folder_store_refuses_paths_out_of_the_repository(tmp_path):
    with pytest.raises(EdgeAdError, match="not a plain relative path"):
        FolderStore(tmp_path).get("../etc/passwd")


def test_fleet_settings_are_checked_with_the_key_named(tmp_path):
    from edge_ad.errors import ConfigError
    from edge_ad.fleet.config import load_plant_config
    from edge_ad.station.config import station_config_from_dict

    with pytest.raises(ConfigError, match="fleet.enabled: needs `part` set and `bundle` empty"):
        station_config_from_dict({"fleet": {"enabled": True, "repository": "s3://b/p"}})
    with pytest.raises(ConfigError, match="repository: must be set when fleet.enabled"):
        station_config_from_dict({"part": "p", "fleet": {"enabled": True}})
    bad = tmp_path / "plant.yaml"
    bad.write_text("rollout: {alarm_factor: 0.5}\n")
    with pytest.raises(ConfigError, match=r"plant.yaml: .*alarm_factor: must be >= 1"):
        load_plant_config(bad)
    bad.write_text("rolout: {}\n")
    with pytest.raises(ConfigError, match="rolout"):
        load_plant_config(bad)
    example = load_plant_config(Path(__file__).resolve().parents[1] / "plant" / "plant.example.yaml")
    assert example.rollout.groups == ["canary"] and example.broker.tls
