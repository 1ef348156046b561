"""GPIO sink on the recording fake backend, and the hub that feeds it from the debouncer."""

from __future__ import annotations

import importlib.util
import logging
import time

import pytest

from edge_ad.station.alarms import AlarmEvent, Alarms, Debouncer, LogSink, build_alarms
from edge_ad.station.alarms.gpio import FakeBackend, GpioFaultSink, GpioSink, NoneBackend, make_backend
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import GpioConfig, station_config_from_dict

try:
    from helpers import wait_until
except ImportError:
    from tests.helpers import wait_until


def event(i: int = 0) -> AlarmEvent:
    return AlarmEvent(station="s", part="p", model_version="v1", score=0.9, threshold=0.5, frame_index=i)


@pytest.mark.parametrize("active_high, idle, active", [(True, 0, 1), (False, 1, 0)])
def test_hold_mode_follows_alarm_level_and_ends_inactive(active_high, idle, active):
    fake = FakeBackend()
    sink = GpioSink(GpioConfig(enabled=True, backend="fake", mode="hold", active_high=active_high), fake)
    sink.on_event(event())  # hold mode: events do not pulse
    sink.set_active(True)
    sink.set_active(True)  # no duplicate transition
    sink.set_active(False)
    sink.set_active(True)
    sink.close()  # shutdown while the alarm is on: the line must be released
    assert fake.levels == [idle, active, idle, active, idle]
    assert fake.closed


def test_pulse_mode_pulse_length_and_extension():
    fake = FakeBackend()
    sink = GpioSink(GpioConfig(enabled=True, backend="fake", mode="pulse", pulse_s=0.1), fake)
    sink.set_active(True)  # pulse mode ignores the level
    sink.on_event(event(0))
    assert wait_until(lambda: len(fake.transitions) == 3)
    (_, lvl0), (t_on, lvl1), (t_off, lvl2) = fake.transitions
    assert (lvl0, lvl1, lvl2) == (0, 1, 0)
    assert 0.09 <= t_off - t_on < 0.5

    sink.on_event(event(1))  # drives the line on before it returns
    t_on = fake.transitions[3][0]
    # the second event must come mid-pulse, 60 ms into the 100 ms pulse: this wait is what is under test
    time.sleep(max(0.0, t_on + 0.06 - time.monotonic()))
    sink.on_event(event(2))  # a second event mid-pulse extends it: one longer pulse, not two
    assert wait_until(lambda: len(fake.transitions) == 5)
    (t_on, on), (t_off, off) = fake.transitions[3:]
    assert (on, off) == (1, 0) and 0.15 <= t_off - t_on < 0.6
    sink.close()
    assert fake.levels[-1] == 0


def test_close_during_pulse_drives_line_inactive_at_once():
    fake = FakeBackend()
    sink = GpioSink(GpioConfig(enabled=True, backend="fake", mode="pulse", pulse_s=5.0, active_high=False), fake)
    sink.on_event(event())
    timer = sink._timer  # the 5 s pulse-end timer
    assert timer is not None and timer.is_alive()
    t0 = time.monotonic()
    sink.close()
    assert fake.levels == [1, 0, 1] and time.monotonic() - t0 < 0.1
    timer.join(2.0)  # cancelled: its thread ends at once instead of firing after 5 s
    assert not timer.is_alive()
    assert fake.levels == [1, 0, 1]  # the cancelled timer wrote nothing after close


def test_none_backend_and_missing_hardware_libraries():
    assert isinstance(make_backend(GpioConfig(backend="none")), NoneBackend)
    GpioSink(GpioConfig(backend="none")).close()
    if importlib.util.find_spec("Jetson") is None:
        with pytest.raises(EdgeAdError, match="pip install Jetson.GPIO"):
            make_backend(GpioConfig(backend="jetson"))
    if importlib.util.find_spec("gpiod") is None:
        with pytest.raises(EdgeAdError, match="pip install gpiod"):
            make_backend(GpioConfig(backend="gpiod"))


def test_hub_debounces_and_drives_every_sink(caplog):
    fake = FakeBackend()
    gpio = GpioSink(GpioConfig(enabled=True, backend="fake", mode="hold"), fake)

    class Broken:
        name = "broken"

        def on_event(self, e):
            raise RuntimeError("sink down")

        set_active = on_event

        def close(self):
            pass

    caplog.set_level(logging.INFO)
    alarms = Alarms([LogSink(), Broken(), gpio], Debouncer(window=3, min_anomalous=2, hold_s=0.5))
    now = 100.0
    rising = []
    for i, bad in enumerate([1, 0, 0, 1, 1, 1, 0, 0, 0]):
        decision = alarms.update(bool(bad), now + i * 0.1)
        if decision.rising:
            rising.append(i)
            alarms.fire(event(i))
    assert rising == [4]  # the lone frame 0 did not fire; frames 3+4 did, once
    assert fake.levels == [0, 1]  # still held: less than hold_s since the last anomalous window
    decision = alarms.update(False, now + 5.0)
    assert decision.falling and fake.levels == [0, 1, 0]
    assert "ANOMALY station=s part=p model=v1 score=0.9000" in caplog.text
    assert "alarm sink broken: on_event failed" in caplog.text  # logged; the GPIO after it still ran
    alarms.close()
    assert fake.closed


def test_build_alarms_from_station_config():
    cfg = station_config_from_dict({"part": "p", "gpio": {"enabled": True, "backend": "fake", "mode": "pulse"},
                                    "debounce": {"window": 4, "min_anomalous": 2, "hold_s": 1.0}})
    alarms = build_alarms(cfg)
    assert [s.name for s in alarms.sinks] == ["log", "gpio"]
    assert (alarms.debouncer.window, alarms.debouncer.min_anomalous, alarms.debouncer.hold_s) == (4, 2, 1.0)
    alarms.close()


@pytest.mark.parametrize("fault_active_high, ok, fault", [(True, 0, 1), (False, 1, 0)])
def test_fault_line_shows_the_fault_and_stays_active_once_stopped(fault_active_high, ok, fault):
    """Fail safe: gpio.fault_pin is active while the station cannot inspect, and after it stops."""
    cfg = GpioConfig(enabled=True, backend="fake", fault_pin=11, fault_active_high=fault_active_high)
    line, alarm = FakeBackend(), FakeBackend()
    hub = Alarms([GpioSink(cfg, alarm), GpioFaultSink(cfg, line)], Debouncer(1, 1, 0.0))
    hub.set_fault("camera lost")
    hub.set_fault("camera lost; bundle v3 does not load")  # still a fault: no new transition
    hub.set_fault("")
    hub.close()
    assert line.levels == [ok, fault, ok, fault] and line.closed
    assert alarm.levels == [0, 0]  # the alarm line is not the fault line (alarm_on_fault is off)


def test_alarm_on_fault_holds_the_alarm_line_through_a_fault():
    """One-line wiring: with gpio.alarm_on_fault no part passes while the station cannot inspect."""
    fake = FakeBackend()
    sink = GpioSink(GpioConfig(enabled=True, backend="fake", alarm_on_fault=True), fake)
    sink.set_active(True)
    sink.set_fault("detector fails")
    sink.set_active(False)  # the alarm clears, the fault holds the line
    sink.set_fault("")
    sink.close()
    assert fake.levels == [0, 1, 0, 0]  # the last write: close() always drives the line inactive


def test_build_alarms_adds_the_fault_line_only_when_configured():
    plain = build_alarms(station_config_from_dict({"gpio": {"enabled": True, "backend": "fake"}}))
    with_fault = build_alarms(station_config_from_dict({"gpio": {"enabled": True, "backend": "fake", "fault_pin": 11}}))
    assert [s.name for s in plain.sinks] == ["log", "gpio"]
    assert [s.name for s in with_fault.sinks] == ["log", "gpio", "gpio-fault"]
    plain.close()
    with_fault.close()
    with pytest.raises(EdgeAdError, match="fault_pin: must be -1 .* other than gpio.pin"):
        station_config_from_dict({"gpio": {"pin": 7, "fault_pin": 7}})
