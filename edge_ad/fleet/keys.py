"""Signing keys of the bundle repository: ed25519 private keys in PEM files (mode 0600), one per TUF role.

The online keys (targets, snapshot, timestamp) live on the publishing machine in one folder; the root key lives
off-line (a USB stick, a safe) and is needed only to create the repository and to rotate or revoke a key. No key
ever goes to a station: a station holds only the public root metadata (root.json) it trusts.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_ad.errors import EdgeAdError

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
ROOT = "root"
KEY_MODE = 0o600


def key_path(keys_dir: str | Path, role: str) -> Path:
    return Path(keys_dir) / f"{role}.pem"


def generate(path: str | Path):
    """A new ed25519 key written to `path` (refusing to overwrite one); returns its signer."""
    from securesystemslib.signer import CryptoSigner

    path = Path(path)
    if path.exists():
        raise EdgeAdError(f"{path} exists: not overwriting a signing key (move it away to replace it)")
    signer = CryptoSigner.generate_ed25519()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    return signer


def load(path: str | Path):
    """The signer of a PEM private key file; a clear error when it is missing, unreadable or open to others."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except OSError as e:
        raise EdgeAdError(f"signing key {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise EdgeAdError(f"signing key {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    try:
        return CryptoSigner(load_pem_private_key(data, None))
    except (ValueError, TypeError) as e:
        raise EdgeAdError(f"signing key {path}: not an unencrypted PEM private key ({e})") from None
