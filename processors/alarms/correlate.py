"""Alarm correlation: raw X.733-style alarms -> IncidentEvent changes (pure logic).

No Kafka, no Faust, no wall clock: every decision depends on the alarms' event times,
the topology (``processors.alarms.topology.Topology``) and the state below, all of which
are plain mappings with JSON-compatible values (dicts in tests; in the shell, maps that
record changed keys for the changelog). Every write re-assigns the mapping entry; stored
values are never mutated in place.

State (``CorrelationState``)
``incidents``   incident_id -> incident record (see ``_new_incident``)
``active``      ne_id -> {probable_cause: active alarm record}; one record per active
                reduction key (ne_id, probable_cause)
``keys``        '["<ne_id>","<cause>"]' -> {"times": [transition event times],
                "incident": last incident of the key}
``open_roots``  root ne_id -> sorted ids of the OPEN incidents rooted there
``seen``        event_id -> event_time of alarms already processed
``meta``        {"watermark": max event time seen, "next_sweep": event time}

Rules (CONTRACT.md §4 "Alarm correlation")
- Idempotence: an alarm whose event_id was already processed (producer retry,
  consumer re-delivery) is a no-op (``DUPLICATE_EVENT``).
- Dedup: a raise (severity other than CLEARED) for an active reduction key only counts
  an occurrence (``DEDUP``): no incident is opened. A re-notification with the same
  alarm_id emits nothing unless it changes the key's perceived severity and with it the
  incident's severity (then UPDATED). A re-raise carrying a new alarm_id joins the
  incident's ``alarm_ids`` and the open incident emits UPDATED, so every raw alarm id is
  published (an incident may stay open for days; waiting for its next change could hide
  an alarm that long). Into an already CLEARED incident (its symptom still active) it is
  recorded silently.
- Clear: CLEARED clears the active alarm with the same key. A CLEARED with no active
  alarm is a no-op (``CLEAR_NO_ACTIVE``, for a metric); so is a CLEARED whose event
  time is before the active alarm's raise (``STALE_CLEAR``: it belongs to an earlier
  episode that arrived late). Clearing the incident's root alarm clears the incident
  (CLEARED, severity CLEARED); clearing a symptom emits UPDATED. Symptoms still active
  when their root clears stay attached to the cleared incident (their later clear or
  re-raise emits nothing) until the incident is pruned. The CLEARED record's own
  alarm_id is not added to ``alarm_ids`` (only raises are incident members).
- A new raise (key not active) goes, in this order of preference, to
  1. the key's previous incident if it is still open (a flapping symptom stays in its
     incident; a MERGED incident is followed to the incident that took it over);
  2. the incident of an active alarm on an ancestor NE (parent chain at the time of
     processing) raised within ``window_ms`` (60 s, inclusive) before or after it. If
     several ancestors qualify the topmost wins; on one NE the earliest raise;
  3. a new incident (OPENED) rooted at itself, ``incident_id = "INC-" + alarm_id``
     (made unique with ``-<event_time>`` / ``-<n>`` if that id is still in state).
  Then every other OPEN incident whose root NE is a strict descendant of the alarm's NE
  and whose root alarm was raised within ``window_ms`` of it is taken over: it emits
  MERGED (``merged_into`` = the taking incident, its own alarm_ids) and its alarms are
  listed by the taking incident. The taking incident's event (OPENED or UPDATED) comes
  first, then the MERGED events in incident_id order.
- Flapping: every raise transition and every clear of an active alarm records the event
  time for the key; ``flap_threshold`` (4) transitions of one key within
  ``flap_window_ms`` (10 min, inclusive) mark the key's incident flapping. The flag
  then stays for the incident's life, and is carried by the event of that same step
  (UPDATED, OPENED or CLEARED).
- An unknown NE (not in the topology) has no ancestors: its alarm opens an incident
  rooted at itself, with ``root_ne_known=false`` (it still counts subscribers placed
  on it and NEs whose parent it names).
- Event fields: severity = highest perceived severity of the incident's active alarms
  (``CLEARED`` on the CLEARED event); affected_subscribers / affected_services come from
  the root NE's subtree in the current topology; opened_at = the root alarm's event
  time; updated_at = the event time of the alarm that caused the change; site_id = the
  root alarm's site_id (also the output key); root_ne_known reflects the topology at
  emission time.

Bounded state (pruning by event time, never by wall clock)
The watermark is the highest alarm event time seen. At most every
``sweep_interval_ms`` of event time a sweep removes: CLEARED/MERGED incidents closed
more than ``retention_ms`` (1 h) before the watermark, together with any still-active
symptom alarms attached to them (a later CLEARED for such a key is a CLEAR_NO_ACTIVE
no-op); key transition records with no transition within ``flap_window_ms``; seen
event ids older than ``event_id_retention_ms`` (1 h). What remains is bounded by the
alarms active in the network plus one hour of traffic. An OPEN incident lives as long as
its root alarm is active.

Partitioning (how the shell runs this)
``oss.alarm.raw`` is keyed by site_id, so one site's alarms share a partition, but
parent chains cross sites: an ONU at an access site hangs off an OLT at an aggregation
site. Correlating per input partition would put the OLT's alarm and its ONUs' alarms in
different tasks with different state and miss exactly the root causes this processor
exists to find. The correct and simple design is therefore one global correlator:
topology, subscriber placement and correlation state are global, owned by one task.
The shell (``processors.alarms.agent``) validates every raw alarm, NetworkElement (and
tombstone) and SubscriberCreated and forwards it into ONE single-partition internal
topic; whichever worker owns that partition applies the records in its order (other
workers stand by). That gives one owner for all state, a total order over topology,
placement and alarms (replaying the internal topic reproduces the same outputs), and
fail-over for free. Alarm rates, even in a storm, are far below what one task handles
(the 10,000-alarm storm test runs in seconds); CDR-scale traffic never passes through
here (other subscriber event types are dropped before the funnel). Outputs go to
``oss.incidents`` keyed by the incident's site_id, so one incident's events stay in
order in one partition.
"""

from __future__ import annotations

import json
from bisect import insort
from dataclasses import dataclass, field
from typing import Any, MutableMapping

from processors.alarms.topology import Topology

__all__ = [
    "CorrelationConfig",
    "CorrelationState",
    "Correlator",
    "InvalidAlarm",
    "validate_alarm",
    "Outcome",
    "SEVERITIES",
    "DUPLICATE_EVENT",
    "DEDUP",
    "OPENED",
    "JOINED",
    "CLEARED_ROOT",
    "CLEARED_SYMPTOM",
    "CLEAR_NO_ACTIVE",
    "STALE_CLEAR",
]

SEVERITIES = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "CLEARED")
_RANK = {"CRITICAL": 4, "MAJOR": 3, "MINOR": 2, "WARNING": 1}

# Dispositions of one raw alarm (Outcome.disposition), for metrics and logs.
DUPLICATE_EVENT = "DUPLICATE_EVENT"  # event_id already processed: no-op
DEDUP = "DEDUP"  # raise of an active key: occurrence counted
OPENED = "OPENED"  # raise that opened a new incident (it is the root)
JOINED = "JOINED"  # raise that joined an existing incident as a symptom
CLEARED_ROOT = "CLEARED_ROOT"  # clear of an incident's root alarm
CLEARED_SYMPTOM = "CLEARED_SYMPTOM"  # clear of a symptom alarm
CLEAR_NO_ACTIVE = "CLEAR_NO_ACTIVE"  # CLEARED with no active alarm: documented no-op
STALE_CLEAR = "STALE_CLEAR"  # CLEARED older than the active raise: no-op

_OPEN = "OPEN"
_CLEARED = "CLEARED"
_MERGED = "MERGED"


class InvalidAlarm(ValueError):
    """The raw alarm is malformed; the shell sends it to the DLQ with this reason."""


@dataclass(frozen=True)
class CorrelationConfig:
    window_ms: int = 60_000
    flap_window_ms: int = 600_000
    flap_threshold: int = 4
    retention_ms: int = 3_600_000
    event_id_retention_ms: int = 3_600_000
    sweep_interval_ms: int = 60_000


@dataclass
class Outcome:
    """What one raw alarm did: its disposition, its incident, the events to publish."""

    disposition: str
    incident_id: str | None
    events: list[dict] = field(default_factory=list)


class CorrelationState:
    """The correlator's mutable state: six mappings with JSON-compatible values."""

    NAMES = ("incidents", "active", "keys", "open_roots", "seen", "meta")

    def __init__(self, **mappings: MutableMapping[str, Any] | None) -> None:
        unknown = set(mappings) - set(self.NAMES)
        if unknown:
            raise TypeError(f"unknown state mappings: {sorted(unknown)}")
        for name in self.NAMES:
            m = mappings.get(name)
            setattr(self, name, {} if m is None else m)

    def to_dict(self) -> dict:
        return {name: dict(getattr(self, name)) for name in self.NAMES}

    @classmethod
    def from_dict(cls, data: dict) -> "CorrelationState":
        return cls(**{name: dict(data.get(name, {})) for name in cls.NAMES})


def key_str(ne_id: str, cause: str) -> str:
    """JSON-safe string form of a reduction key."""
    return json.dumps([ne_id, cause], separators=(",", ":"), ensure_ascii=False)


def validate_alarm(alarm: Any) -> None:
    """Raise InvalidAlarm unless alarm is a well-formed Alarm record."""
    if not isinstance(alarm, dict):
        raise InvalidAlarm("alarm is not a record")
    for name in ("event_id", "alarm_id", "ne_id", "site_id", "probable_cause"):
        v = alarm.get(name)
        if not isinstance(v, str) or not v:
            raise InvalidAlarm(f"{name} missing or not a non-empty string")
    t = alarm.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        raise InvalidAlarm("event_time missing or not int epoch millis")
    if alarm.get("severity") not in SEVERITIES:
        raise InvalidAlarm(f"severity {alarm.get('severity')!r} not one of {SEVERITIES}")


class Correlator:
    """Applies raw alarms to a CorrelationState over a Topology."""

    def __init__(
        self,
        state: CorrelationState | None = None,
        topology: Topology | None = None,
        config: CorrelationConfig | None = None,
    ) -> None:
        self.state = CorrelationState() if state is None else state
        self.topology = Topology() if topology is None else topology
        self.config = CorrelationConfig() if config is None else config

    # ================================================================== entry point
    def process(self, alarm: dict) -> Outcome:
        """Apply one raw Alarm event; returns what it did and the events to publish.

        Raises InvalidAlarm (state untouched) for malformed input.
        """
        validate_alarm(alarm)
        st = self.state
        t = alarm["event_time"]
        eid = alarm["event_id"]
        if eid in st.seen:
            return Outcome(DUPLICATE_EVENT, None)
        st.seen[eid] = t
        if t > st.meta.get("watermark", t - 1):
            st.meta["watermark"] = t
        if alarm["severity"] == "CLEARED":
            outcome = self._clear(alarm)
        else:
            outcome = self._raise(alarm)
        self._maybe_sweep()
        return outcome

    # ================================================================== raise
    def _raise(self, alarm: dict) -> Outcome:
        st, cfg = self.state, self.config
        ne, cause, t = alarm["ne_id"], alarm["probable_cause"], alarm["event_time"]
        aid, sev = alarm["alarm_id"], alarm["severity"]
        on_ne = st.active.get(ne, {})
        rec = on_ne.get(cause)
        if rec is not None:
            return self._dedup(alarm, rec)

        key = key_str(ne, cause)
        target = self._affinity(key)
        if target is None:
            target = self._ancestor_incident(ne, t)
        opened = target is None
        if opened:
            inc = self._new_incident(alarm)
        else:
            inc = dict(st.incidents[target])
            inc["alarm_ids"] = list(inc["alarm_ids"])
            if aid not in inc["alarm_ids"]:
                inc["alarm_ids"].append(aid)
            inc["active"] = dict(inc["active"])
            inc["active"][aid] = {"ne_id": ne, "cause": cause, "severity": sev}
            inc["updated_at"] = t
        iid = inc["incident_id"]

        on_ne = dict(on_ne)
        on_ne[cause] = {
            "alarm_id": aid,
            "incident_id": iid,
            "raised_at": t,
            "severity": sev,
            "occurrences": 1,
        }
        st.active[ne] = on_ne
        if self._transition(key, t, iid):
            inc["flapping"] = True

        merged_events: list[dict] = []
        for victim_id in self._takeover_candidates(ne, t, iid):
            merged_events.append(self._absorb(inc, victim_id, t))
        st.incidents[iid] = inc
        if opened:
            self._add_open_root(inc["root_ne_id"], iid)
        head = self._event(inc, "OPENED" if opened else "UPDATED", t)
        return Outcome(OPENED if opened else JOINED, iid, [head] + merged_events)

    def _dedup(self, alarm: dict, rec: dict) -> Outcome:
        st = self.state
        ne, cause, t = alarm["ne_id"], alarm["probable_cause"], alarm["event_time"]
        iid = rec["incident_id"]
        rec = dict(rec)
        rec["occurrences"] = rec.get("occurrences", 1) + 1
        old_sev = rec["severity"]
        rec["severity"] = alarm["severity"]
        on_ne = dict(st.active[ne])
        on_ne[cause] = rec
        st.active[ne] = on_ne

        inc = dict(st.incidents[iid])
        before = self._severity(inc)
        new_id = alarm["alarm_id"] not in inc["alarm_ids"]
        if new_id:
            inc["alarm_ids"] = inc["alarm_ids"] + [alarm["alarm_id"]]
        if old_sev != alarm["severity"] and rec["alarm_id"] in inc["active"]:
            inc["active"] = dict(inc["active"])
            member = dict(inc["active"][rec["alarm_id"]])
            member["severity"] = alarm["severity"]
            inc["active"][rec["alarm_id"]] = member
        events: list[dict] = []
        if inc["status"] == _OPEN and (new_id or self._severity(inc) != before):
            inc["updated_at"] = t
            events.append(self._event(inc, "UPDATED", t))
        st.incidents[iid] = inc
        return Outcome(DEDUP, iid, events)

    # ================================================================== clear
    def _clear(self, alarm: dict) -> Outcome:
        st = self.state
        ne, cause, t = alarm["ne_id"], alarm["probable_cause"], alarm["event_time"]
        on_ne = st.active.get(ne, {})
        rec = on_ne.get(cause)
        if rec is None:
            return Outcome(CLEAR_NO_ACTIVE, None)
        iid = rec["incident_id"]
        if t < rec["raised_at"]:
            return Outcome(STALE_CLEAR, iid)
        on_ne = dict(on_ne)
        del on_ne[cause]
        if on_ne:
            st.active[ne] = on_ne
        else:
            del st.active[ne]

        inc = dict(st.incidents[iid])
        inc["active"] = {a: m for a, m in inc["active"].items() if a != rec["alarm_id"]}
        if self._transition(key_str(ne, cause), t, iid):
            inc["flapping"] = True
        is_root = rec["alarm_id"] == inc["root_alarm_id"]
        events: list[dict] = []
        if inc["status"] == _OPEN:
            inc["updated_at"] = t
            if is_root:
                inc["status"] = _CLEARED
                inc["closed_at"] = t
                self._remove_open_root(inc["root_ne_id"], iid)
                events.append(self._event(inc, "CLEARED", t))
            else:
                events.append(self._event(inc, "UPDATED", t))
        st.incidents[iid] = inc
        return Outcome(CLEARED_ROOT if is_root else CLEARED_SYMPTOM, iid, events)

    # ================================================================== helpers
    def _new_incident(self, alarm: dict) -> dict:
        aid, t = alarm["alarm_id"], alarm["event_time"]
        iid = f"INC-{aid}"
        if iid in self.state.incidents:
            base = f"INC-{aid}-{t}"
            iid, n = base, 1
            while iid in self.state.incidents:
                n += 1
                iid = f"{base}-{n}"
        return {
            "incident_id": iid,
            "root_ne_id": alarm["ne_id"],
            "root_alarm_id": aid,
            "site_id": alarm["site_id"],
            "opened_at": t,
            "updated_at": t,
            "closed_at": None,
            "status": _OPEN,
            "merged_into": None,
            "flapping": False,
            "alarm_ids": [aid],
            # active members: alarm_id -> {"ne_id", "cause", "severity"}
            "active": {
                aid: {
                    "ne_id": alarm["ne_id"],
                    "cause": alarm["probable_cause"],
                    "severity": alarm["severity"],
                }
            },
        }

    def _open_incident(self, iid: str | None) -> str | None:
        """The open incident iid resolves to (following MERGED links), or None."""
        hops = 0
        while iid is not None and hops < 64:
            inc = self.state.incidents.get(iid)
            if inc is None:
                return None
            if inc["status"] == _OPEN:
                return iid
            if inc["status"] != _MERGED:
                return None
            iid = inc["merged_into"]
            hops += 1
        return None

    def _affinity(self, key: str) -> str | None:
        krec = self.state.keys.get(key)
        if krec is None:
            return None
        return self._open_incident(krec.get("incident"))

    def _ancestor_incident(self, ne: str, t: int) -> str | None:
        st, window = self.state, self.config.window_ms
        found = None
        for anc in self.topology.ancestors(ne):
            best = None
            for cause in sorted(st.active.get(anc, {})):
                rec = st.active[anc][cause]
                if abs(rec["raised_at"] - t) > window:
                    continue
                inc = st.incidents.get(rec["incident_id"])
                if inc is None or inc["status"] != _OPEN:
                    continue
                cand = (rec["raised_at"], rec["alarm_id"], rec["incident_id"])
                if best is None or cand < best:
                    best = cand
            if best is not None:
                found = best[2]  # keep walking: the topmost qualifying ancestor wins
        return found

    def _takeover_candidates(self, ne: str, t: int, target: str) -> list[str]:
        st, window = self.state, self.config.window_ms
        sub = self.topology.subtree(ne)
        if len(st.open_roots) < len(sub):
            roots = [r for r in st.open_roots.keys() if r in sub]
        else:
            roots = [r for r in sub if r in st.open_roots]
        out = []
        for root in roots:
            if root == ne:
                continue
            for iid in st.open_roots[root]:
                if iid == target:
                    continue
                inc = st.incidents[iid]
                if abs(inc["opened_at"] - t) <= window:
                    out.append(iid)
        return sorted(out)

    def _absorb(self, inc: dict, victim_id: str, t: int) -> dict:
        """Move victim's alarms into inc (not yet stored); return victim's MERGED event."""
        st = self.state
        victim = dict(st.incidents[victim_id])
        iid = inc["incident_id"]
        ids = list(inc["alarm_ids"])
        present = set(ids)
        for a in victim["alarm_ids"]:
            if a not in present:
                ids.append(a)
                present.add(a)
        inc["alarm_ids"] = ids
        inc["active"] = {**inc["active"], **victim["active"]}
        inc["flapping"] = inc["flapping"] or victim["flapping"]
        inc["updated_at"] = t
        for member in victim["active"].values():
            on_ne = st.active.get(member["ne_id"], {})
            rec = on_ne.get(member["cause"])
            if rec is not None and rec["incident_id"] == victim_id:
                on_ne = dict(on_ne)
                on_ne[member["cause"]] = {**rec, "incident_id": iid}
                st.active[member["ne_id"]] = on_ne
        victim["status"] = _MERGED
        victim["merged_into"] = iid
        victim["closed_at"] = t
        victim["updated_at"] = t
        self._remove_open_root(victim["root_ne_id"], victim_id)
        event = self._event(victim, "MERGED", t)
        st.incidents[victim_id] = victim
        return event

    def _transition(self, key: str, t: int, iid: str) -> bool:
        """Record a raise/clear transition of key at t; True when the key is flapping."""
        cfg = self.config
        krec = self.state.keys.get(key)
        times = list(krec["times"]) if krec is not None else []
        insort(times, t)
        latest = times[-1]
        times = [x for x in times if latest - x <= cfg.flap_window_ms]
        self.state.keys[key] = {"times": times, "incident": iid}
        n = cfg.flap_threshold
        return any(times[i + n - 1] - times[i] <= cfg.flap_window_ms for i in range(len(times) - n + 1))

    def _add_open_root(self, root: str, iid: str) -> None:
        ids = list(self.state.open_roots.get(root, []))
        if iid not in ids:
            insort(ids, iid)
        self.state.open_roots[root] = ids

    def _remove_open_root(self, root: str, iid: str) -> None:
        ids = [x for x in self.state.open_roots.get(root, []) if x != iid]
        if ids:
            self.state.open_roots[root] = ids
        elif root in self.state.open_roots:
            del self.state.open_roots[root]

    @staticmethod
    def _severity(inc: dict) -> str:
        best = None
        for member in inc["active"].values():
            s = member["severity"]
            if best is None or _RANK.get(s, 0) > _RANK.get(best, 0):
                best = s
        return best if best is not None else "CLEARED"

    def _event(self, inc: dict, change: str, t: int) -> dict:
        topo = self.topology
        root = inc["root_ne_id"]
        return {
            "event_type": "IncidentEvent",
            "incident_id": inc["incident_id"],
            "change": change,
            "root_ne_id": root,
            "root_alarm_id": inc["root_alarm_id"],
            "severity": "CLEARED" if change == "CLEARED" else self._severity(inc),
            "alarm_ids": list(inc["alarm_ids"]),
            "affected_subscribers": topo.subtree_subscribers(root),
            "affected_services": topo.subtree_services(root),
            "flapping": bool(inc["flapping"]),
            "opened_at": inc["opened_at"],
            "site_id": inc["site_id"],
            "merged_into": inc["merged_into"] if change == "MERGED" else None,
            "root_ne_known": topo.known(root),
            "updated_at": t,
        }

    # ================================================================== pruning
    def _maybe_sweep(self) -> None:
        wm = self.state.meta.get("watermark")
        if wm is None:
            return
        next_sweep = self.state.meta.get("next_sweep")
        if next_sweep is not None and wm < next_sweep:
            return
        self.sweep()

    def sweep(self) -> dict:
        """Prune by event time (see module docstring); returns counts removed."""
        st, cfg = self.state, self.config
        wm = st.meta.get("watermark")
        removed = {"incidents": 0, "keys": 0, "seen": 0, "orphan_alarms": 0}
        if wm is None:
            return removed
        cutoff = wm - cfg.retention_ms
        for iid in sorted(st.incidents.keys()):
            inc = st.incidents[iid]
            if inc["status"] == _OPEN or inc["closed_at"] is None or inc["closed_at"] >= cutoff:
                continue
            for member in inc["active"].values():
                on_ne = st.active.get(member["ne_id"])
                if not on_ne:
                    continue
                rec = on_ne.get(member["cause"])
                if rec is not None and rec["incident_id"] == iid:
                    on_ne = {c: r for c, r in on_ne.items() if c != member["cause"]}
                    if on_ne:
                        st.active[member["ne_id"]] = on_ne
                    else:
                        del st.active[member["ne_id"]]
                    removed["orphan_alarms"] += 1
            del st.incidents[iid]
            removed["incidents"] += 1
        key_cutoff = wm - cfg.flap_window_ms
        for key in sorted(st.keys.keys()):
            if st.keys[key]["times"][-1] < key_cutoff:
                del st.keys[key]
                removed["keys"] += 1
        seen_cutoff = wm - cfg.event_id_retention_ms
        for eid in [e for e, et in st.seen.items() if et < seen_cutoff]:
            del st.seen[eid]
            removed["seen"] += 1
        st.meta["next_sweep"] = wm + cfg.sweep_interval_ms
        return removed
