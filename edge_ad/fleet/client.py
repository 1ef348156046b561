"""A station's side of the repository: python-tuf's client (tuf.ngclient) verifies every byte it fetches.

The station trusts one root.json given at install; from there ngclient checks signatures, thresholds, expiry and
version numbers (no rollback), and every target's length and hash. What does not verify raises Refused with a
one-line reason that names the cause (bad signature, expired, rolled back, changed file)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge_ad.errors import EdgeAdError
from edge_ad.fleet import desired as D
from edge_ad.fleet.repo import META, TARGETS
from edge_ad.fleet.store import NotFound, Store


class Refused(EdgeAdError):
    """What the repository served does not verify: nothing of it is used."""


def _fetcher_class():
    from tuf.api import exceptions as X
    from tuf.ngclient.fetcher import FetcherInterface

    class StoreFetcher(FetcherInterface):
        """ngclient's downloads through our store (S3, HTTP, a folder); counts the bytes fetched."""

        def __init__(self, store: Store) -> None:
            self.store = store
            self.bytes = 0

        def _fetch(self, url: str) -> Iterator[bytes]:
            try:
                data = self.store.get(url)
            except NotFound as e:
                raise X.DownloadHTTPError(str(e), 404) from None
            except EdgeAdError as e:
                raise X.DownloadError(str(e)) from None
            self.bytes += len(data)
            yield data

    return StoreFetcher


def reason(exc: BaseException) -> str:
    """Why ngclient refused, in words a plant engineer acts on."""
    from tuf.api import exceptions as X

    text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    for cls, words in ((X.BadVersionNumberError, "rolled-back metadata (older than what this station has seen)"),
                       (X.ExpiredMetadataError, "expired metadata (the repository was not re-signed in time)"),
                       (X.UnsignedMetadataError, "wrong or missing signature"),
                       (X.LengthOrHashMismatchError, "file changed since it was signed (length or hash differs)"),
                       (X.DownloadError, "download failed"), (X.RepositoryError, "repository metadata refused")):
        if isinstance(exc, cls):
            return f"{words}: {text}"
    return f"{type(exc).__name__}: {text}"


class Client:
    """One refresh of the repository's metadata; then desired state and bundles, each verified as it is read."""

    def __init__(self, store: Store, cache_dir: str | Path, trusted_root: str | Path) -> None:
        try:
            from tuf.ngclient import Updater
        except ImportError:
            raise EdgeAdError("fleet updates need python-tuf: pip install 'edge_ad[fleet]'") from None
        cache = Path(cache_dir)
        self.meta_dir, self.target_dir = cache / "metadata", cache / "downloads"
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.target_dir.mkdir(parents=True, exist_ok=True)
        if not (self.meta_dir / "root.json").is_file():
            try:
                shutil.copyfile(trusted_root, self.meta_dir / "root.json")
            except OSError as e:
                raise EdgeAdError(f"fleet.trusted_root {trusted_root}: {e.strerror or e} (copy the repository's "
                                  "1.root.json there at install)") from None
        self.fetcher = _fetcher_class()(store)
        self._updater = Updater(str(self.meta_dir), f"{META}/", str(self.target_dir), f"{TARGETS}/", self.fetcher,
                                bootstrap=None)
        self._refreshed = False

    def refresh(self) -> None:
        """Fetch and verify root (rotations), timestamp, snapshot, targets; Refused when anything is off."""
        from tuf.api import exceptions as X

        try:
            self._updater.refresh()
        except (X.RepositoryError, X.DownloadError) as e:
            raise Refused(reason(e)) from None
        except (OSError, ValueError) as e:
            raise Refused(f"repository metadata unreadable: {type(e).__name__}: {str(e)[:200]}") from None
        self._refreshed = True

    def read(self, path: str) -> bytes | None:
        """A target's bytes, verified (None when the signed targets do not list it)."""
        from tuf.api import exceptions as X

        if not self._refreshed:
            self.refresh()
        info = self._updater.get_targetinfo(path)
        if info is None:
            return None
        with tempfile.TemporaryDirectory(dir=self.target_dir) as tmp:
            out = Path(tmp) / "target"
            try:
                self._updater.download_target(info, str(out))
            except (X.RepositoryError, X.DownloadError) as e:
                raise Refused(f"{path}: {reason(e)}") from None
            return out.read_bytes()

    def target_hash(self, path: str) -> str | None:
        """The signed sha256 of a target (None when not listed): a local copy with this hash needs no download."""
        if not self._refreshed:
            self.refresh()
        info = self._updater.get_targetinfo(path)
        return info.hashes.get("sha256") if info is not None else None

    def desired(self) -> dict | None:
        """The signed desired state, or None when the repository has none yet."""
        data = self.read(D.DESIRED)
        return D.parse(data) if data is not None else None

    def bundle_files(self, part: str) -> dict[int, list[str]]:
        """version -> target paths of the part's published bundles (from the verified targets)."""
        if not self._refreshed:
            self.refresh()
        out: dict[int, list[str]] = {}
        for path in self._updater._trusted_set.targets.targets:  # noqa: SLF001 - ngclient has no public listing
            bits = path.split("/")
            if len(bits) == 3 and bits[0] == part and bits[1][:1] == "v" and bits[1][1:].isdigit():
                out.setdefault(int(bits[1][1:]), []).append(path)
        return out

    def fetch_bundle(self, part: str, version: int, dest: Path) -> Path:
        """Every file of <part>/v<N>/ into dest, each verified; Refused when the version is not signed."""
        files = self.bundle_files(part).get(version)
        if not files:
            raise Refused(f"{part} v{version} is not in the signed targets (revoked, or never published)")
        dest.mkdir(parents=True, exist_ok=True)
        for path in files:
            data = self.read(path)
            assert data is not None
            (dest / path.rsplit("/", 1)[1]).write_bytes(data)
        return dest
