"""Where a bundle repository lives: an S3 bucket (any S3-compatible store, through boto3), a folder (served over
HTTP(S) by any web server), or an HTTP(S) URL (read-only: what a station fetches from). Keys are '/'-separated
paths below the repository root, e.g. `metadata/timestamp.json` or `targets/flange/v3/<sha256>.model.onnx`."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write

HTTP_TIMEOUT_S = 30.0  # one request to the repository; a station retries at its next poll
S3_ATTEMPTS = 1  # no retry with backoff inside a call: a station looks again at its next poll, a publish is rerun


class NotFound(EdgeAdError):
    """The key is not in the repository (a TUF client reads this as HTTP 404)."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise EdgeAdError(f"repository key {key!r}: not a plain relative path")
    return key


@dataclass
class FolderStore:
    """A folder on this machine (or a mounted share); a web server publishes it read-only to stations."""

    root: Path
    read_only: bool = False

    def get(self, key: str) -> bytes:
        p = self.root / _check_key(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{key} not in the repository folder {self.root}") from None
        except OSError as e:
            raise EdgeAdError(f"cannot read {p}: {e.strerror or e}") from None

    def put(self, key: str, data: bytes) -> None:
        if self.read_only:
            raise EdgeAdError(f"repository {self.root} is read-only here")
        try:
            atomic_write(self.root / _check_key(key), data, fsync=True)
        except OSError as e:
            raise EdgeAdError(f"cannot write {self.root / key}: {e.strerror or e}") from None

    def describe(self) -> str:
        return str(self.root)


class S3Store:
    """A bucket (and key prefix) on AWS S3 or any S3-compatible server (MinIO, rclone serve s3, Ceph RGW).

    Credentials come the way boto3 finds them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance
    role): never from edge_ad's config files. A station gets a read-only key; the publishing machine a read-write one."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str = "", region: str = "") -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise EdgeAdError("an s3:// repository needs boto3: pip install 'edge_ad[fleet]'") from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url
        # a session of its own: credentials are read now, from this process's environment (the default session
        # would keep the first ones it saw)
        self._client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
                                    config=Config(retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
                                                  connect_timeout=HTTP_TIMEOUT_S, read_timeout=HTTP_TIMEOUT_S,
                                                  s3={"addressing_style": "path"}))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def _fail(self, what: str, key: str, e: Exception) -> EdgeAdError:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""
        return EdgeAdError(f"s3 {what} {self.describe()}/{key} failed: {code or type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}")

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{key} not in {self.describe()}") from None
            raise self._fail("read of", key, e) from None
        except BotoCoreError as e:
            raise self._fail("read of", key, e) from None

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as e:
            raise self._fail("write of", key, e) from None

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (a fresh store); an existing one is left as it is."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as e:
                raise self._fail("create of bucket", "", e) from None
        except BotoCoreError as e:
            raise self._fail("access to bucket", "", e) from None

    def describe(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass
class HttpStore:
    """A repository folder served over HTTP(S) by a plain web server: read-only, as stations see it."""

    base: str

    def get(self, key: str) -> bytes:
        url = self.base.rstrip("/") + "/" + urllib.parse.quote(_check_key(key))
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise NotFound(f"{key} not at {self.base}") from None
            raise EdgeAdError(f"GET {url}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise EdgeAdError(f"GET {url}: {getattr(e, 'reason', e)}") from None

    def put(self, key: str, data: bytes) -> None:
        raise EdgeAdError(f"{self.base} is served over HTTP: publish into the folder the web server serves")

    def describe(self) -> str:
        return self.base


Store = Any  # FolderStore | S3Store | HttpStore: get(key) -> bytes (NotFound), put(key, data), describe()


def open_store(url: str, s3_endpoint: str = "", read_only: bool = False) -> Store:
    """The store a repository URL names: s3://bucket[/prefix], http(s)://host/path, or a folder (path or file://)."""
    if not url:
        raise EdgeAdError("no repository given: s3://bucket/prefix, http(s)://host/path or a folder")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise EdgeAdError(f"{url}: an S3 repository is s3://BUCKET[/PREFIX]")
        return S3Store(parsed.netloc, parsed.path, s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3", ""))
    if parsed.scheme in ("http", "https"):
        return HttpStore(url)
    if parsed.scheme in ("", "file"):
        return FolderStore(Path(parsed.path if parsed.scheme == "file" else url), read_only=read_only)
    raise EdgeAdError(f"{url}: unknown repository scheme {parsed.scheme!r} (s3, http, https, file or a folder)")
