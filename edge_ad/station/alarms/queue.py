"""A bounded on-disk FIFO: one numbered JSON file per item, so alarms survive a broker outage or a restart.

An item that cannot be written (a full or read-only disk) is kept in memory instead, counted and logged at a
bounded rate: it is still delivered while the station runs, it is only lost if the station stops first.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)


class DiskQueue:
    """Items are written atomically (temp file + rename) and removed only when the caller says so."""

    def __init__(self, path: str | Path, max_items: int, fsync: bool = True) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.path = Path(path)
        self.max_items = max_items
        self.fsync = fsync
        self.dropped = 0  # oldest items dropped because the queue was full
        self.write_errors = 0  # items that could not be written to disk (kept in memory)
        self._mem: dict[int, bytes] = {}  # items whose file could not be written
        self._lock = threading.Lock()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full or read-only disk: items are kept in memory (push counts them)
            log.error("queue %s: cannot create the folder (%s); events are kept in memory until it can be",
                      self.path, exc.strerror or exc)
        for tmp in self.path.glob(".*.tmp"):  # left by a crash mid-write
            tmp.unlink(missing_ok=True)
        seqs = sorted(int(p.stem) for p in self.path.glob("*.json") if p.stem.isdigit())
        self._seqs: deque[int] = deque(seqs)
        self._next = (seqs[-1] + 1) if seqs else 1
        if seqs:
            log.info("queue %s: %d item(s) left from a previous run", self.path, len(seqs))

    def _file(self, seq: int) -> Path:
        return self.path / f"{seq:012d}.json"

    def push(self, item: dict[str, Any]) -> int:
        """Append; when full, the oldest item is dropped with a warning. Returns the item's number."""
        data = json.dumps(item, default=_jsonable).encode()
        with self._lock:
            seq = self._next
            self._next += 1
            try:
                self._write(seq, data)
            except OSError as exc:
                self._mem[seq] = data
                self.write_errors += 1
                log_limited(log, logging.ERROR, f"queue-write:{self.path}", "queue %s: cannot write item #%d (%s); "
                            "kept in memory until delivered (%d so far; lost only if the station stops first)",
                            self.path, seq, exc.strerror or exc, self.write_errors)
            self._seqs.append(seq)
            while len(self._seqs) > self.max_items:
                old = self._seqs.popleft()
                self._discard(old)
                self.dropped += 1
                log_limited(log, logging.WARNING, f"queue-full:{self.path}", "queue %s full (%d items): dropped the "
                            "oldest item #%d", self.path, self.max_items, old)
        return seq

    def _write(self, seq: int, data: bytes) -> None:
        """Temp file + rename; a failed write leaves no temp file behind."""
        tmp = self.path / f".{seq}.tmp"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self._file(seq))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def _discard(self, seq: int) -> None:
        if self._mem.pop(seq, None) is None:
            self._file(seq).unlink(missing_ok=True)

    def peek(self) -> tuple[int, dict[str, Any]] | None:
        """The oldest item, or None. Unreadable files are logged and discarded."""
        while True:
            with self._lock:
                if not self._seqs:
                    return None
                seq = self._seqs[0]
                if seq in self._mem:
                    return seq, json.loads(self._mem[seq])
                path = self._file(seq)
                try:
                    return seq, json.loads(path.read_bytes())
                except (OSError, ValueError) as exc:
                    log.warning("queue %s: discarding unreadable item %s: %s", self.path, path.name, exc)
                    self._seqs.popleft()
                    path.unlink(missing_ok=True)

    def remove(self, seq: int) -> None:
        """Delete an item once it is delivered (a no-op if it was already dropped)."""
        with self._lock:
            try:
                self._seqs.remove(seq)
            except ValueError:
                return
            self._discard(seq)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)


def _jsonable(obj: Any) -> Any:
    """numpy scalars and arrays (scores, boxes) become plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
