"""The station's fleet agent: a thread beside the inspection loop that follows the signed desired state.

Poll the repository every `fleet.poll_s` (or at once on an MQTT notify), verify with TUF, fetch and stage the
desired version as parts/<part>/v<N>/, switch `current` (bundle.switch_current, the part's lock), and reload as
SIGHUP does. A version that does not verify is never staged; one that does not load within `switch_timeout_s` is
switched back. Either way the station keeps running the old version and its retained fleet status says why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
from edge_ad.fleet import desired as D
from edge_ad.fleet import mqtt as M
from edge_ad.fleet import protocol as P
from edge_ad.fleet.client import Client, Refused
from edge_ad.fleet.store import open_store
from edge_ad.station.config import StationConfig
from edge_ad.station.status import StationStatus

log = logging.getLogger(__name__)

WAKE_S = 0.5  # the agent thread's longest sleep: a stop is seen within this
COUNTED = ("frames", "anomalous", "alarms", "errors")


def _counts(snap: dict) -> dict:
    return {k: int(snap.get(k) or 0) for k in COUNTED}


class Agent:
    """Follows the desired state for one station; `check()` is one pass (tests call it directly)."""

    def __init__(self, cfg: StationConfig, status: StationStatus, reload: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cfg.station == P.FLEET:
            raise EdgeAdError(f"station may not be called {P.FLEET!r} with fleet.enabled (its topics are the fleet's)")
        self.cfg, self.fc, self.status, self.reload = cfg, cfg.fleet, status, reload
        self.store = open_store(self.fc.repository, self.fc.s3_endpoint, read_only=True)
        self.update: dict[str, Any] = {"state": "idle", "version": None, "reason": "", "time": time.time()}
        self.desired: int | None = None
        self.bytes_fetched = 0
        self._refused: dict[int, tuple[str, str]] = {}  # version -> (signed manifest hash, why): a re-publish is tried
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._seq = 0
        self._on_version: dict[str, Any] = {}  # the running version and the counters when it started
        self._previous: dict[str, Any] = {}  # the version before it and what it counted
        self._thread: threading.Thread | None = None
        self._mqtt = None
        self._lock = threading.Lock()  # one check at a time (thread and a test's direct call)

    # --- lifetime ------------------------------------------------------------------------------
    def start(self) -> Agent:
        if self.cfg.mqtt.enabled:
            prefix = self.cfg.mqtt.topic_prefix
            self._mqtt = M.connect(self.cfg.mqtt, f"edge_ad-{self.cfg.station}-fleet", (P.notify_topic(prefix),),
                                   lambda _t, _p, retained: None if retained else self._wake.set(),
                                   will=(P.status_topic(prefix, self.cfg.station), P.offline(self.cfg.station)))
        self._thread = threading.Thread(target=self._run, name="edge_ad-fleet", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.fc.switch_timeout_s + 5)
        if self._mqtt is not None:
            info = self._mqtt.publish(P.status_topic(self.cfg.mqtt.topic_prefix, self.cfg.station),
                                      P.offline(self.cfg.station), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
            M.close(self._mqtt)

    def _run(self) -> None:
        next_check = next_report = 0.0
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_check or self._wake.is_set():
                self._wake.clear()
                self.check()
                failed = self.update["state"] in ("error", "refused")
                next_check = self._clock() + (self.fc.retry_s if failed else self.fc.poll_s)
                next_report = 0.0
            if self._clock() >= next_report:
                self.report()
                next_report = self._clock() + self.fc.report_s
            self._wake.wait(min(WAKE_S, max(0.0, min(next_check, next_report) - self._clock())))

    # --- one pass --------------------------------------------------------------------------------
    def check(self) -> None:
        """Refresh, compare the desired version with the running one, stage and switch when they differ."""
        with self._lock:
            try:
                self._check()
            except Refused as e:
                self._set("refused", self.desired, str(e))
            except EdgeAdError as e:
                self._set("error", self.desired, str(e))
            except Exception as e:  # noqa: BLE001 - the agent must never take the station down
                log.exception("fleet: check failed")
                self._set("error", self.desired, f"{type(e).__name__}: {e}")

    def _check(self) -> None:
        cache = Path(self.fc.cache_dir)
        client = Client(self.store, cache, self.fc.trusted_root)
        try:
            client.refresh()
            doc = client.desired()
        finally:
            self.bytes_fetched += client.fetcher.bytes
        want = D.version_for(doc or {}, self.cfg.part, self.cfg.station, self.fc.group)
        self.desired = want
        root, part = self.cfg.parts_dir, self.cfg.part
        if want is None:
            self._set("idle", None, "the repository names no version of this part for this station")
            return
        running = self.status.snapshot().get("version")
        if running == f"v{want}" and B.current_version(root, part) == want:
            self._set("ok", want, "")
            return
        signed = client.target_hash(f"{part}/v{want}/{B.MANIFEST}")
        if signed is None:
            raise Refused(f"{part} v{want} is not in the signed targets (revoked, or never published)")
        if self._refused.get(want, ("", ""))[0] == signed:
            self._set("refused", want, self._refused[want][1])  # refused before, unchanged since: not fetched again
            return
        self._stage(client, want, signed)
        self._switch(want, signed)

    def _stage(self, client: Client, want: int, signed: str) -> Path:
        """The verified bundle in parts_dir as v<want>: an intact local copy whose manifest is the signed one is used
        as it is (a rollback fetches nothing), anything else is fetched and verified file by file."""
        root, part = self.cfg.parts_dir, self.cfg.part
        local = Path(root) / part / f"v{want}"
        if (local / B.MANIFEST).is_file() and B.sha256(local / B.MANIFEST) == signed and not B.damage(local):
            return local
        self._set("fetching", want, "")
        tmp = Path(self.fc.cache_dir) / "staging" / f"{part}-v{want}"
        shutil.rmtree(tmp, ignore_errors=True)
        before = client.fetcher.bytes
        try:
            client.fetch_bundle(part, want, tmp)
            return B.install_version(root, part, want, tmp)
        except Refused as e:
            self._refused[want] = (signed, str(e))
            raise
        finally:
            self.bytes_fetched += client.fetcher.bytes - before
            shutil.rmtree(tmp, ignore_errors=True)

    def _switch(self, want: int, signed: str) -> None:
        """current -> v<want>, reload, and back again when it does not run within switch_timeout_s."""
        root, part = self.cfg.parts_dir, self.cfg.part
        old = B.current_version(root, part)
        self._set("switching", want, "")
        B.switch_current(root, part, want)
        if self._reload_to(f"v{want}"):
            log.info("fleet: %s v%s running (was %s)", part, want, f"v{old}" if old else "none")
            self._set("ok", want, "")
            return
        why = self.status.snapshot().get("fault") or f"v{want} not running after {self.fc.switch_timeout_s:g} s"
        self._refused[want] = (signed, f"v{want} did not load: {why}")
        if old is not None:
            B.switch_current(root, part, old)
            self._reload_to(f"v{old}")
        log.error("fleet: %s v%s refused (%s); running %s", part, want, why, f"v{old}" if old else "nothing")
        self._set("refused", want, f"v{want} did not load: {why}")

    def _reload_to(self, version: str) -> bool:
        """Ask the loop to reload (as SIGHUP) and wait for its answer: True when `version` then runs."""
        before = self.status.snapshot().get("reloads", 0)
        self.reload()
        deadline = self._clock() + self.fc.switch_timeout_s
        while self._clock() < deadline and not self._stop.is_set():
            snap = self.status.snapshot()
            if snap.get("reloads", 0) > before:  # a bundle that does not load leaves the old version running
                return snap.get("version") == version
            self._stop.wait(0.05)
        return False

    def _set(self, state: str, version: int | None, reason: str) -> None:
        changed = (state, version, reason) != (self.update["state"], self.update["version"], self.update["reason"])
        self.update = {"state": state, "version": version, "reason": reason, "time": time.time()}
        if changed:
            if state in ("refused", "error"):
                log.warning("fleet: %s (v%s): %s", state, version, reason)
            self.report()

    # --- status ----------------------------------------------------------------------------------
    def message(self) -> dict:
        """The retained fleet status: what the station runs, how it does, and where its update stands."""
        snap = self.status.snapshot()
        counts = _counts(snap)
        version = snap.get("version") or ""
        if self._on_version.get("version") != version:
            if self._on_version.get("version"):
                base = self._on_version
                self._previous = {"version": base["version"],
                                  **{k: counts[k] - base["counts"][k] for k in COUNTED}}
            self._on_version = {"version": version, "since": time.time(), "counts": counts}
        on = self._on_version
        self._seq += 1
        return {"station": self.cfg.station, "part": self.cfg.part, "group": self.fc.group, "online": True,
                "state": snap.get("state"), "fault": snap.get("fault") or "", "version": version,
                "desired": self.desired, "update": self.update, "fps": snap.get("fps"), **counts,
                "on_version": {"version": version, "since": on["since"],
                               **{k: counts[k] - on["counts"][k] for k in COUNTED}},
                "previous": self._previous, "bytes_fetched": self.bytes_fetched, "time": time.time(),
                "seq": self._seq}

    def report(self) -> None:
        doc = self.message()
        if self._mqtt is not None:
            self._mqtt.publish(P.status_topic(self.cfg.mqtt.topic_prefix, self.cfg.station), json.dumps(doc), qos=1,
                               retain=True)



@contextlib.contextmanager
def following(cfg: StationConfig, stop: Any) -> Iterator[StationStatus | None]:
    """The agent beside `edge_ad run` while the block runs: the status the loop should write (None, and nothing
    started, when fleet is off). Its reload is the loop's SIGHUP path (stop.request_reload)."""
    if not cfg.fleet.enabled:
        yield None
        return
    status = StationStatus(station=cfg.station, part=cfg.part)
    agent = Agent(cfg, status, stop.request_reload).start()
    try:
        yield status
    finally:
        agent.close()
