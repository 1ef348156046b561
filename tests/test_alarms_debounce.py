"""Debouncer: N anomalous of the last M frames fires once; the alarm holds hold_s after the last such window."""

from __future__ import annotations

import pytest

from edge_ad.station.alarms import Debouncer


def run(d: Debouncer, verdicts, dt: float = 0.1):
    return [d.update(bool(v), i * dt) for i, v in enumerate(verdicts)]


def test_single_frame_glitches_never_fire():
    d = Debouncer(window=5, min_anomalous=3, hold_s=1.0)
    assert not any(x.active for x in run(d, [1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0]))


def test_fires_once_holds_then_clears():
    d = Debouncer(window=5, min_anomalous=3, hold_s=0.35)
    out = run(d, [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert [i for i, x in enumerate(out) if x.rising] == [3]
    # condition last met at frame 7 (frames 3-7 hold three anomalies): on until 0.7 + 0.35 s -> frame 11
    assert [i for i, x in enumerate(out) if x.falling] == [11]
    assert [x.active for x in out] == [False] * 3 + [True] * 8 + [False] * 3
    assert out[5].count == 5


def test_renewed_anomaly_during_hold_extends_without_a_new_event():
    d = Debouncer(window=2, min_anomalous=2, hold_s=0.5)
    out = run(d, [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert sum(x.rising for x in out) == 1 and sum(x.falling for x in out) == 1
    assert [i for i, x in enumerate(out) if x.falling] == [10]  # 0.5 s after frame 5


def test_window_one_is_immediate_and_reset_forgets():
    d = Debouncer(window=1, min_anomalous=1, hold_s=0.0)
    assert [x.active for x in run(d, [1, 0, 1])] == [True, False, True]
    d.reset()
    assert not d.active and not d.update(False, 10.0).active


def test_bad_counts_are_rejected():
    with pytest.raises(ValueError):
        Debouncer(window=2, min_anomalous=3)
