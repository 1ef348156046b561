"""A staged rollout, after Eclipse hawkBit's rollout groups with an error threshold: the new version goes to one
group at a time (canaries first), by signing a new desired state. A group passes when its stations run the new
version without a fault for `soak_s` and its alarm rate stays within `alarm_factor` of what the same stations had
on the old version; more failed stations than `error_threshold` allows, a fault, a refusal or a jump in alarms stops
the rollout, and every group that got the new version is rolled back to the old one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_ad.errors import EdgeAdError
from edge_ad.fleet import desired as D
from edge_ad.fleet import protocol as P
from edge_ad.fleet import repo as R
from edge_ad.fleet.config import PlantConfig, RolloutConfig
from edge_ad.fleet.publish import publish_desired, read_desired
from edge_ad.fleet.status import FleetView
from edge_ad.fleet.store import Store

REST = "*"  # the last group: every station of the part in no listed group


@dataclass
class Verdict:
    """How a group did on the new version: passed, failed (with why), or still to be decided."""

    passed: bool = False
    failed: bool = False
    reason: str = ""
    failed_stations: dict[str, str] = field(default_factory=dict)
    new_rate: float | None = None
    old_rate: float | None = None


def members(stations: dict[str, dict], part: str, group: str, listed: list[str]) -> list[str]:
    """The stations of this part in `group` (REST: in none of the listed groups), as they report themselves."""
    out = []
    for name, d in stations.items():
        if d.get("part") != part:
            continue
        g = d.get("group") or ""
        if (group == REST and g not in listed) or g == group:
            out.append(name)
    return sorted(out)


def judge(cfg: RolloutConfig, stations: dict[str, dict], names: list[str], version: int, started: float,
          healthy_since: dict[str, float], now: float) -> Verdict:
    """One look at a group: which stations failed, whether the rest soaked long enough, the alarm rates."""
    want = f"v{version}"
    failed: dict[str, str] = {}
    late = now - started > cfg.station_timeout_s
    new = {"frames": 0, "anomalous": 0}
    old = {"frames": 0, "anomalous": 0}
    for s in names:
        d = stations.get(s) or {}
        upd = d.get("update") or {}
        if upd.get("state") == "refused" and upd.get("version") == version:
            failed[s] = f"refused: {upd.get('reason', '')}"
        elif not d.get("online", False):
            if late:
                failed[s] = "offline"
            healthy_since.pop(s, None)
        elif d.get("version") == want and d.get("state") == "fault":
            failed[s] = f"fault on {want}: {d.get('fault', '')}"
        elif d.get("version") == want and d.get("state") == "running":
            healthy_since.setdefault(s, now)
            on = d.get("on_version") or {}
            new["frames"] += on.get("frames", 0)
            new["anomalous"] += on.get("anomalous", 0)
            prev = d.get("previous") or {}
            old["frames"] += prev.get("frames", 0)
            old["anomalous"] += prev.get("anomalous", 0)
        else:
            healthy_since.pop(s, None)
            if late:
                failed[s] = f"not running {want} after {cfg.station_timeout_s:g} s (runs {d.get('version') or 'nothing'})"
    v = Verdict(failed_stations=failed, new_rate=P.alarm_rate(new), old_rate=P.alarm_rate(old))
    if len(failed) > cfg.error_threshold * len(names):
        v.failed = True
        v.reason = f"{len(failed)} of {len(names)} station(s) failed: " + "; ".join(f"{k}: {w}" for k, w in
                                                                                 sorted(failed.items()))
        return v
    judged = new["frames"] >= cfg.min_frames
    if judged and v.new_rate is not None and v.old_rate is not None:
        allowed = max(cfg.alarm_factor * v.old_rate, cfg.alarm_rate_floor)
        if v.new_rate > allowed:
            v.failed = True
            v.reason = (f"alarm rate {v.new_rate:.3f} on {want} against {v.old_rate:.3f} on the old version (allowed "
                        f"{allowed:.3f}: {cfg.alarm_factor:g}x, at least {cfg.alarm_rate_floor:g})")
            return v
    soaked = [s for s in names if s not in failed and now - healthy_since.get(s, now) >= cfg.soak_s
              and s in healthy_since]
    if judged and len(soaked) + len(failed) == len(names):
        v.passed = True
    elif late and not judged and len(soaked) + len(failed) == len(names):
        v.failed = True
        v.reason = f"{new['frames']} frame(s) inspected on {want} in {cfg.station_timeout_s:g} s, fewer than min_frames " \
                   f"({cfg.min_frames}): the alarm rate cannot be judged"
    return v


class Rollout:
    """Drives one part's rollout from `old` to `version`; `progress` is what the broker's retained record shows."""

    def __init__(self, plant: PlantConfig, store: Store, view: FleetView, part: str, version: int,
                 clock: Callable[[], float] = time.monotonic, say: Callable[[str], None] = print) -> None:
        self.plant, self.cfg, self.store, self.view = plant, plant.rollout, store, view
        self.part, self.version, self.clock, self.say = part, version, clock, say
        repo = R.open_repo(store)
        if version not in R.targets_summary(repo).get(part, []):
            raise EdgeAdError(f"{part} v{version} is not published in {store.describe()} (edge_ad parts publish first)")
        self.doc = read_desired(repo)
        self.old = (self.doc.get("parts", {}).get(part) or {}).get("version")
        if self.old == version:
            raise EdgeAdError(f"{part} v{version} is already the desired version of every station")
        groups = [*self.cfg.groups, REST]
        self.progress: dict[str, Any] = {"part": part, "from": self.old, "to": version, "state": "running",
                                         "reason": "", "started": time.time(), "updated": time.time(),
                                         "groups": [{"name": g, "state": "pending", "stations": [], "reason": ""}
                                                    for g in groups]}

    def _publish(self, doc: dict) -> None:
        self.doc = doc
        publish_desired(self.store, self.plant.keys_dir, doc, self.plant.expiry)
        self.view.notify({"part": self.part, "serial": doc.get("serial")})

    def _show(self) -> None:
        self.progress["updated"] = time.time()
        self.view.publish_rollout(self.part, self.progress)

    def run(self) -> dict:
        """Group by group until done, or stopped and rolled back; returns the final progress record."""
        self._show()
        touched: list[str] = []
        for g in self.progress["groups"]:
            names = members(self.view.stations(), self.part, g["name"], self.cfg.groups)
            g["stations"] = names
            if not names and g["name"] != REST:
                g["state"] = "skipped"
                g["reason"] = "no station of this part reports this group"
                self._show()
                continue
            touched += names
            g["state"], g["started"] = "updating", time.time()
            self.say(f"rollout {self.part} v{self.version}: group {g['name']} ({len(names)} station(s))")
            doc = D.set_version(self.doc, self.part, self.version) if g["name"] == REST else \
                D.set_version(self.doc, self.part, self.version, group=g["name"])
            self._publish(doc)
            verdict = self._watch(g, names) if names else Verdict(passed=True)  # the default, for stations to come
            g["finished"] = time.time()
            if verdict.failed:
                g["state"], g["reason"] = "failed", verdict.reason
                self.progress.update(state="stopped", reason=f"group {g['name']}: {verdict.reason}")
                self._show()
                self.say(f"rollout stopped: {self.progress['reason']}")
                self._roll_back(touched)
                return self.progress
            g["state"] = "done"
            g["alarm_rate"], g["old_alarm_rate"] = verdict.new_rate, verdict.old_rate
            self._show()
        self.progress["state"] = "done"
        self._show()
        self.say(f"rollout {self.part} v{self.version}: done")
        return self.progress

    def _watch(self, g: dict, names: list[str]) -> Verdict:
        started, healthy_since = self.clock(), {}
        while True:
            v = judge(self.cfg, self.view.stations(), names, self.version, started, healthy_since, self.clock())
            g["running"] = len(healthy_since)
            g["soaked_s"] = round(min((self.clock() - t for t in healthy_since.values()), default=0.0), 1)
            g["alarm_rate"], g["old_alarm_rate"] = v.new_rate, v.old_rate
            if v.passed or v.failed:
                return v
            g["state"] = "soaking" if len(healthy_since) == len(names) else "updating"
            self._show()
            time.sleep(self.cfg.poll_s)

    def _roll_back(self, names: list[str]) -> None:
        """Every station that got the new version goes back to the old one (or, with no old one, stays put)."""
        if self.old is None:
            self.progress["reason"] += "; no earlier version to roll back to"
            self._show()
            return
        self._publish(D.set_version(self.doc, self.part, self.old))
        self.progress["state"] = "rolling_back"
        self._show()
        deadline = self.clock() + self.cfg.station_timeout_s
        want = f"v{self.old}"
        while self.clock() < deadline:
            st = self.view.stations()
            back = [s for s in names if (st.get(s) or {}).get("version") == want]
            self.progress["rolled_back"] = len(back)
            if len(back) == len(names):
                break
            time.sleep(self.cfg.poll_s)
        self.progress["state"] = "rolled_back"
        self._show()
        self.say(f"rolled back: {self.progress.get('rolled_back', 0)} of {len(names)} station(s) run {want} again")


def roll_back(plant: PlantConfig, store: Store, view: FleetView | None, part: str, version: int | None) -> int:
    """By hand: every station of the part to `version` (default: the newest published one older than desired)."""
    repo = R.open_repo(store)
    doc = read_desired(repo)
    cur = (doc.get("parts", {}).get(part) or {}).get("version")
    have = R.targets_summary(repo).get(part, [])
    if version is None:
        older = [v for v in have if cur is None or v < cur]
        if not older:
            raise EdgeAdError(f"{part}: no published version older than v{cur} to roll back to")
        version = older[-1]
    publish_desired(store, plant.keys_dir, D.set_version(doc, part, version), plant.expiry)
    if view is not None:
        view.notify({"part": part})
        view.publish_rollout(part, {"part": part, "from": cur, "to": version, "state": "rolled_back",
                                    "reason": "rolled back by hand", "updated": time.time(), "groups": []})
    return version
