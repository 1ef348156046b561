"""A bounded on-disk FIFO: one numbered JSON file per item, so alarms survive a broker outage or a restart."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from edge_ad.errors import EdgeAdError

log = logging.getLogger(__name__)


class DiskQueue:
    """Items are written atomically (temp file + rename) and removed only when the caller says so."""

    def __init__(self, path: str | Path, max_items: int, fsync: bool = True) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.path = Path(path)
        self.max_items = max_items
        self.fsync = fsync
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeAdError(f"cannot create queue folder {self.path}: {exc}") from None
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
            tmp = self.path / f".{seq}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self._file(seq))
            self._seqs.append(seq)
            while len(self._seqs) > self.max_items:
                old = self._seqs.popleft()
                self._file(old).unlink(missing_ok=True)
                self.dropped += 1
                log.warning("queue %s full (%d items): dropped the oldest item #%d", self.path, self.max_items, old)
        return seq

    def peek(self) -> tuple[int, dict[str, Any]] | None:
        """The oldest item, or None. Unreadable files are logged and discarded."""
        while True:
            with self._lock:
                if not self._seqs:
                    return None
                seq = self._seqs[0]
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
            self._file(seq).unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)


def _jsonable(obj: Any) -> Any:
    """numpy scalars and arrays (scores, boxes) become plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
