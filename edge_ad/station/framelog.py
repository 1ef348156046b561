"""The per-frame JSON-lines log: bounded on disk (one rotated file), and a full or read-only disk drops lines,
counted and logged at a bounded rate, never the loop. Every line on disk is complete."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)

ROTATED_SUFFIX = ".1"


class FrameLog:
    """One JSON line per frame, written straight to the file (unbuffered), so a crash loses at most that line."""

    def __init__(self, path: str, max_mb: float = 256.0) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.dropped = 0  # lines that could not be written
        self._f: IO[bytes] | None = None
        self._size = 0

    def write(self, rec: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(rec) + "\n").encode()
        try:
            f = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                f = self._open()
            written = f.write(line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            self._size += len(line)
        except OSError as exc:
            self.dropped += 1
            self._undo_partial()
            log_limited(log, logging.ERROR, f"frame-log:{self.path}", "frame log %s: cannot write (%s); "
                        "%d line(s) dropped so far, the station keeps inspecting", self.path,
                        exc.strerror or exc, self.dropped)

    def _open(self) -> IO[bytes]:
        if self._f is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab", buffering=0)
            self._size = os.fstat(self._f.fileno()).st_size
        return self._f

    def _rotate(self) -> None:
        """frames.jsonl -> frames.jsonl.1 (replacing the older one): the log never holds more than 2 x max_mb."""
        assert self.path is not None
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ROTATED_SUFFIX))

    def _undo_partial(self) -> None:
        """A line cut short by a full disk is cut off again, so every line on disk stays valid JSON."""
        if self._f is None:
            return
        try:
            if os.fstat(self._f.fileno()).st_size != self._size:
                os.ftruncate(self._f.fileno(), self._size)
        except OSError:
            self.close()  # reopened (and re-measured) at the next write

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
