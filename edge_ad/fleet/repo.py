"""The bundle repository's TUF metadata (python-tuf): root, targets, snapshot, timestamp, written into a store.

Consistent snapshots: targets are stored under their hash (`targets/<part>/v<N>/<sha256>.<file>`) and targets and
snapshot under their version (`metadata/<N>.targets.json`), so a station reading while a publish is under way sees
the old state or the new one, never a mix; `metadata/timestamp.json` is written last and switches them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge_ad.errors import EdgeAdError
from edge_ad.fleet import keys as K
from edge_ad.fleet.config import ExpiryConfig
from edge_ad.fleet.store import NotFound, Store

META, TARGETS = "metadata", "targets"
SPEC_VERSION = "1.0.31"


def _tuf():
    try:
        from tuf.api import metadata as M
        from tuf.api.serialization.json import JSONSerializer
    except ImportError:
        raise EdgeAdError("the bundle repository needs python-tuf: pip install 'edge_ad[fleet]'") from None
    return M, JSONSerializer


def _expires(days: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


@dataclass
class Repo:
    """The newest metadata of a repository, loaded for a change; `commit()` signs and writes what changed."""

    store: Store
    root: object
    targets: object
    snapshot: object
    timestamp: object

    def target_paths(self) -> list[str]:
        return sorted(self.targets.signed.targets)


def _dump(md) -> bytes:
    _, JSONSerializer = _tuf()
    return JSONSerializer(compact=False).serialize(md)


def _load(store: Store, key: str, cls):
    M, _ = _tuf()
    try:
        return M.Metadata[cls].from_bytes(store.get(key))
    except NotFound:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file in the repository: say which
        raise EdgeAdError(f"{store.describe()}/{key}: not valid TUF metadata ({str(e)[:160]})") from None


def newest_root_version(store: Store) -> int:
    n = 1
    try:
        store.get(f"{META}/1.root.json")
    except NotFound:
        raise EdgeAdError(f"{store.describe()} is not a bundle repository (no {META}/1.root.json): "
                          "create it with `edge_ad fleet init`") from None
    while True:
        try:
            store.get(f"{META}/{n + 1}.root.json")
        except NotFound:
            return n
        n += 1


def open_repo(store: Store) -> Repo:
    """The repository's current metadata, as the timestamp names it."""
    M, _ = _tuf()
    root = _load(store, f"{META}/{newest_root_version(store)}.root.json", M.Root)
    ts = _load(store, f"{META}/timestamp.json", M.Timestamp)
    snap = _load(store, f"{META}/{ts.signed.snapshot_meta.version}.snapshot.json", M.Snapshot)
    tgt = _load(store, f"{META}/{snap.signed.meta['targets.json'].version}.targets.json", M.Targets)
    return Repo(store, root, tgt, snap, ts)


def init_repo(store: Store, keys_dir: str | Path, root_key: str | Path, expiry: ExpiryConfig) -> Repo:
    """A new, empty repository: keys made where missing (the root key at its off-line path), 1.root.json signed."""
    M, _ = _tuf()
    try:
        store.get(f"{META}/1.root.json")
        raise EdgeAdError(f"{store.describe()} already holds a repository ({META}/1.root.json): not replacing it")
    except NotFound:
        pass
    if not root_key:
        raise EdgeAdError("init needs --root-key PATH: the off-line root key (made there if it does not exist)")
    signers = {role: (K.load(p) if (p := Path(root_key) if role == K.ROOT else K.key_path(keys_dir, role)).exists()
                      else K.generate(p)) for role in (K.ROOT, *K.ONLINE_ROLES)}
    root = M.Root(expires=_expires(expiry.root_days), consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    repo = Repo(store, M.Metadata(root), M.Metadata(M.Targets(expires=_expires(expiry.targets_days))),
                M.Metadata(M.Snapshot(expires=_expires(expiry.snapshot_days))),
                M.Metadata(M.Timestamp(expires=_expires(expiry.timestamp_days))))
    repo.root.sign(signers[K.ROOT])
    store.put(f"{META}/1.root.json", _dump(repo.root))
    repo.targets.signed.version = 0  # commit() makes it 1
    repo.snapshot.signed.version = 0
    repo.timestamp.signed.version = 0
    commit(repo, online_signers(keys_dir), expiry)
    return repo


def online_signers(keys_dir: str | Path) -> dict:
    """The publishing machine's keys for targets, snapshot and timestamp."""
    return {role: K.load(K.key_path(keys_dir, role)) for role in K.ONLINE_ROLES}


def target_file(path: str, data: bytes):
    M, _ = _tuf()
    return M.TargetFile.from_data(path, data, ["sha256"])


def stored_target_key(path: str, sha256: str) -> str:
    """Where a target's bytes live in the store under consistent snapshots: <dir>/<hash>.<name>."""
    d, _, name = path.rpartition("/")
    return f"{TARGETS}/{d + '/' if d else ''}{sha256}.{name}"


def add_targets(repo: Repo, files: dict[str, bytes]) -> None:
    """Upload files (repository path -> bytes) under their hash and list them in targets (commit() signs)."""
    for path, data in files.items():
        tf = target_file(path, data)
        repo.store.put(stored_target_key(path, tf.hashes["sha256"]), data)
        repo.targets.signed.targets[path] = tf


def remove_targets(repo: Repo, prefix: str) -> list[str]:
    """Drop every target under `prefix` from the signed list (their bytes stay, no longer trusted by anyone)."""
    gone = [p for p in repo.targets.signed.targets if p.startswith(prefix)]
    for p in gone:
        del repo.targets.signed.targets[p]
    return gone


def commit(repo: Repo, signers: dict, expiry: ExpiryConfig, targets_changed: bool = True) -> None:
    """Sign and write the changed metadata: targets (when changed), snapshot, then timestamp last."""
    M, _ = _tuf()
    if targets_changed:
        t = repo.targets.signed
        t.version += 1
        t.expires = _expires(expiry.targets_days)
        repo.targets.signatures.clear()
        repo.targets.sign(signers["targets"])
        repo.store.put(f"{META}/{t.version}.targets.json", _dump(repo.targets))
        s = repo.snapshot.signed
        s.meta["targets.json"] = M.MetaFile(version=t.version)
        s.version += 1
        s.expires = _expires(expiry.snapshot_days)
        repo.snapshot.signatures.clear()
        repo.snapshot.sign(signers["snapshot"])
        repo.store.put(f"{META}/{s.version}.snapshot.json", _dump(repo.snapshot))
    ts = repo.timestamp.signed
    ts.snapshot_meta = M.MetaFile(version=repo.snapshot.signed.version)
    ts.version += 1
    ts.expires = _expires(expiry.timestamp_days)
    repo.timestamp.signatures.clear()
    repo.timestamp.sign(signers["timestamp"])
    repo.store.put(f"{META}/timestamp.json", _dump(repo.timestamp))


def resign(store: Store, keys_dir: str | Path, expiry: ExpiryConfig, role: str = "timestamp") -> Repo:
    """Re-sign before expiry: the timestamp (daily), or targets and snapshot with it."""
    repo = open_repo(store)
    commit(repo, online_signers(keys_dir), expiry, targets_changed=role in ("targets", "snapshot"))
    return repo


def rotate_key(store: Store, keys_dir: str | Path, root_key: str | Path, role: str, expiry: ExpiryConfig,
               new_root_key: str | Path = "") -> Repo:
    """Replace a role's key: a new root version (signed with the off-line root key, and with the new one too when
    root itself rotates) revokes the old key and trusts the new; metadata is re-signed with it. The old key file is
    kept as <role>.pem.revoked-<keyid prefix> (a station no longer accepts anything it signs)."""
    M, _ = _tuf()
    if role not in (K.ROOT, *K.ONLINE_ROLES):
        raise EdgeAdError(f"unknown role {role!r}: one of {', '.join((K.ROOT, *K.ONLINE_ROLES))}")
    if not root_key:
        raise EdgeAdError("rotating a key needs --root-key PATH: the off-line root key signs the new root")
    repo = open_repo(store)
    old_root = K.load(root_key)
    root = repo.root.signed
    if role == K.ROOT:
        if not new_root_key:
            raise EdgeAdError("rotating the root key needs --new-root-key PATH (made there when it does not exist)")
        new = K.load(new_root_key) if Path(new_root_key).exists() else K.generate(new_root_key)
    else:
        path = K.key_path(keys_dir, role)
        old_id = next(iter(root.roles[role].keyids))
        if path.exists():
            path.rename(path.with_name(f"{path.name}.revoked-{old_id[:12]}"))
        new = K.generate(path)
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    root.add_key(new.public_key, role)
    root.version += 1
    root.expires = _expires(expiry.root_days)
    repo.root.signatures.clear()
    repo.root.sign(old_root)
    if role == K.ROOT:
        repo.root.sign(new, append=True)
    store.put(f"{META}/{root.version}.root.json", _dump(repo.root))
    commit(repo, online_signers(keys_dir), expiry, targets_changed=True)
    return repo


def public_root(store: Store) -> bytes:
    """1.root.json: what a station is given to trust (a copy made at install, never fetched unverified)."""
    return store.get(f"{META}/1.root.json")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def targets_summary(repo: Repo) -> dict:
    """part -> sorted versions published (for `edge_ad fleet status` and publish messages)."""
    out: dict[str, set] = {}
    for p in repo.target_paths():
        bits = p.split("/")
        if len(bits) == 3 and bits[1].startswith("v") and bits[1][1:].isdigit():
            out.setdefault(bits[0], set()).add(int(bits[1][1:]))
    return {k: sorted(v) for k, v in out.items()}


def read_target(repo: Repo, path: str) -> bytes | None:
    """A target's bytes as the publisher sees them (checked against its own signed hash), None when not listed."""
    tf = repo.targets.signed.targets.get(path)
    if tf is None:
        return None
    data = repo.store.get(stored_target_key(path, tf.hashes["sha256"]))
    if sha256_hex(data) != tf.hashes["sha256"]:
        raise EdgeAdError(f"{path} in {repo.store.describe()} differs from its signed hash: the store was changed")
    return data


def dumps(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
