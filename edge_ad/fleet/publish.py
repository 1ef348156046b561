"""Publish a part bundle into the repository, set the desired state, revoke a version: each one signed commit."""

from __future__ import annotations

import json
from pathlib import Path

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
from edge_ad.fleet import desired as D
from edge_ad.fleet import repo as R
from edge_ad.fleet.config import ExpiryConfig
from edge_ad.fleet.store import Store


def bundle_prefix(part: str, version: int) -> str:
    return f"{part}/v{version}/"


def publish_bundle(store: Store, keys_dir: str | Path, parts_root: str | Path, part: str, expiry: ExpiryConfig,
                   version: int | None = None) -> dict:
    """Upload parts/<part>/v<N>/ (default: current) as signed targets <part>/v<N>/<file>; versions are immutable."""
    B.check_part_name(part)
    version = version or B.current_version(parts_root, part)
    if version is None:
        raise EdgeAdError(f"part {part} has no current version in {parts_root}: give --version N")
    src = Path(parts_root) / part / f"v{version}"
    why = B.damage(src)
    if why:
        raise EdgeAdError(f"not publishing {part} v{version}: {why}")
    man = B.read_manifest(src)
    if man.get("part", part) != part or man.get("version", version) != version:
        raise EdgeAdError(f"{src}: its manifest says {man.get('part')} v{man.get('version')}, not {part} v{version}")
    files = {bundle_prefix(part, version) + name: (src / name).read_bytes() for name in [*man["files"], B.MANIFEST]}
    signers = R.online_signers(keys_dir)
    repo = R.open_repo(store)
    prefix = bundle_prefix(part, version)
    old = {p: tf.hashes["sha256"] for p, tf in repo.targets.signed.targets.items() if p.startswith(prefix)}
    new = {p: R.sha256_hex(d) for p, d in files.items()}
    if old and old != new:
        raise EdgeAdError(f"{part} v{version} is already published with other files: a version never changes "
                          "(calibrate a new version, or revoke this one first)")
    if old == new:
        return {"part": part, "version": version, "files": len(files), "bytes": 0, "already": True}
    R.add_targets(repo, files)
    R.commit(repo, signers, expiry)
    return {"part": part, "version": version, "files": len(files), "bytes": sum(map(len, files.values())),
            "already": False, "targets_version": repo.targets.signed.version}


def read_desired(repo: R.Repo) -> dict:
    data = R.read_target(repo, D.DESIRED)
    return D.parse(data) if data is not None else D.empty()


def publish_desired(store: Store, keys_dir: str | Path, doc: dict, expiry: ExpiryConfig) -> R.Repo:
    """Sign a new desired state; every version it names must be a published target."""
    repo = R.open_repo(store)
    have = R.targets_summary(repo)
    for part, p in doc.get("parts", {}).items():
        named = {p.get("version"), *p.get("groups", {}).values(), *p.get("stations", {}).values()} - {None}
        missing = sorted(v for v in named if v not in have.get(part, []))
        if missing:
            raise EdgeAdError(f"desired state names {part} " + ", ".join(f"v{v}" for v in missing) +
                              f", not published (published: {', '.join(f'v{v}' for v in have.get(part, [])) or 'none'})")
    R.add_targets(repo, {D.DESIRED: R.dumps(doc)})
    R.commit(repo, R.online_signers(keys_dir), expiry)
    return repo


def revoke(store: Store, keys_dir: str | Path, part: str, version: int, expiry: ExpiryConfig) -> list[str]:
    """Take a version out of the signed targets: no station installs it after this (roll stations off it first)."""
    repo = R.open_repo(store)
    doc = read_desired(repo)
    p = doc.get("parts", {}).get(part, {})
    if version in {p.get("version"), *p.get("groups", {}).values(), *p.get("stations", {}).values()}:
        raise EdgeAdError(f"{part} v{version} is still desired ({json.dumps(p)}): roll back first "
                          f"(edge_ad fleet rollback {part} --to N)")
    gone = R.remove_targets(repo, bundle_prefix(part, version))
    if not gone:
        raise EdgeAdError(f"{part} v{version} is not published in {store.describe()}")
    R.commit(repo, R.online_signers(keys_dir), expiry)
    return gone
