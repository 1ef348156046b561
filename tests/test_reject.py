"""The rejector on the recording fake GPIO: timed and encoder-distance rejects in part order, a result that comes too
late (fail-safe or not), overlapping pulses merged; and the trigger queue's order, numbering and refusals."""

from __future__ import annotations

import time

import pytest

from edge_ad.station.alarms.gpio import FakeBackend
from edge_ad.station.config import RejectConfig, TriggerConfig
from edge_ad.station.gpio_input import EdgeFilter, FakeInput
from edge_ad.station.reject import Rejector
from edge_ad.station.trigger import Encoder, TriggerQueue, clean_part_id, part_id_from_payload
from helpers import wait_until


def highs(fake: FakeBackend) -> list[float]:
    return [t for t, level in fake.transitions if level == 1]


def test_timed_rejects_in_part_order_at_the_delay():
    out = FakeBackend()
    rej = Rejector(RejectConfig(enabled=True, pin=3, delay_s=0.15, pulse_s=0.01), out)
    q = TriggerQueue(TriggerConfig())
    q.listen(rej.track)
    verdicts = ["nok", "ok", "nok", "error", "ok"]
    trigs = []
    for v in verdicts:
        trigs.append(q.fire("timer"))
        rej.decide(trigs[-1].seq, v)  # judged at once; the part is still on its way
        time.sleep(0.03)  # 5 parts on the conveyor at once
    assert wait_until(lambda: rej.in_flight() == 0, timeout=5)
    assert wait_until(lambda: out.levels[-1] == 0 and len(highs(out)) == 3, timeout=5)
    rej.close()
    assert [p.seq for p in rej.pulses] == [1, 3, 4] and rej.passed == 2 and rej.late == 0
    for p, t in zip(highs(out), [trigs[0], trigs[2], trigs[3]]):
        assert 0.0 <= p - (t.mono + 0.15) < 0.08  # the fake's own clock: at the delay, never early (2 busy cores)
    assert out.levels[0] == 0 and out.levels[-1] == 0 and out.closed


def test_a_result_too_late_is_rejected_fail_safe_or_passed_when_not():
    for on_error, pulses in ((True, 1), (False, 0)):
        out = FakeBackend()
        rej = Rejector(RejectConfig(enabled=True, pin=3, delay_s=0.02, pulse_s=0.01, on_error=on_error), out)
        q = TriggerQueue(TriggerConfig())
        q.listen(rej.track)
        t = q.fire("gpio")
        assert wait_until(lambda: rej.in_flight() == 0, timeout=5)
        rej.decide(t.seq, "ok")  # after the part passed the rejector: what was done stays
        rej.close()
        assert len(rej.pulses) == pulses and rej.late == 1 and len(highs(out)) == pulses


def test_encoder_distance_rejects_and_merged_pulses():
    enc_line, out = FakeInput(), FakeBackend()
    enc = Encoder(enc_line).start()
    rej = Rejector(RejectConfig(enabled=True, pin=3, encoder_pin=4, distance_counts=5, pulse_s=0.2), out, enc)
    q = TriggerQueue(TriggerConfig(), lambda: enc.count)
    q.listen(rej.track)
    a = q.fire("gpio")  # at count 0: due at 5
    for _ in range(2):
        enc_line.pulse()
    b = q.fire("gpio")  # at count 2: due at 7
    rej.decide(a.seq, "nok")
    rej.decide(b.seq, "nok")
    for _ in range(4):
        enc_line.pulse()
    assert enc.count == 6 and wait_until(lambda: len(rej.pulses) == 1, timeout=5) and rej.in_flight() == 1
    enc_line.pulse()
    assert wait_until(lambda: len(rej.pulses) == 2, timeout=5)
    rej.close()
    assert [p.seq for p in rej.pulses] == [1, 2]
    assert len(highs(out)) == 1  # the second reject came during the first pulse: one longer pulse, not a glitch


def test_trigger_queue_order_ids_refusals_and_debounce():
    q = TriggerQueue(TriggerConfig(queue_max=2, part_id_prefix="L3-"))
    ts = [q.fire("mqtt", "A"), q.fire("http"), q.fire("opcua", "C")]
    assert [t.seq for t in ts] == [1, 2, 3] and [t.part_id for t in ts] == ["A", "L3-2", "C"]
    assert not ts[0].error and not ts[1].error and "trigger queue full" in ts[2].error and q.refused == 1
    assert [q.next(0.1).seq for _ in range(3)] == [1, 2, 3] and q.next(0.01) is None
    assert part_id_from_payload(b'{"part_id": "X-1"}') == "X-1" and part_id_from_payload(b"X-2") == "X-2"
    assert part_id_from_payload(b"") == "" and part_id_from_payload(b'"X-3"') == "X-3"
    with pytest.raises(ValueError):
        clean_part_id("a" * 65)
    f = EdgeFilter(rising=True, debounce_s=0.01)
    assert [f.accept(level, t) for level, t in ((True, 0.0), (False, 0.001), (True, 0.002), (True, 0.02))] == \
        [True, False, False, True] and f.bounced == 1
