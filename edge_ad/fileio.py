"""The one atomic file writer: readers (a running station, a resumed calibrate) see the old file or the new one,
never half of one. numpy-free, torch-free."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def tmp_path(path: Path) -> Path:
    """A hidden sibling unique to this process and thread (several writers never share a temp file)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: str | Path, fsync: bool = False) -> Iterator[IO[bytes]]:
    """Write a binary file under a temporary name and rename it into place when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave temp files behind
        raise


def atomic_write(path: str | Path, data: bytes | str, fsync: bool = False) -> Path:
    """Replace `path` with `data` (str is written as UTF-8) atomically; returns the path."""
    with atomic_open(path, fsync) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path: str | Path, doc: Any, fsync: bool = False) -> Path:
    """JSON with one-space indent (people read these files), written atomically."""
    return atomic_write(path, json.dumps(doc, indent=1, default=str) + "\n", fsync)
