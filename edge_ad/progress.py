"""The one progress bar: tqdm on a terminal, silent off one.

Under systemd or CI stderr is not a TTY and every tqdm refresh becomes a new journal/log line (hundreds per
epoch); a person watching a terminal still gets the bar. Summaries that matter off a TTY (an epoch's loss, a
calibrate stage's time) are printed or logged by their callers as one line each.
"""

from __future__ import annotations

from typing import Any, Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), shown only when its stream is a TTY (tqdm's disable=None) and `enabled`."""
    kwargs["disable"] = None if enabled else True
    return tqdm(iterable, **kwargs)
