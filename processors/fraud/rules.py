"""Pure fraud rules (CONTRACT §4 "Fraud detection") over explicit, bounded per-key state.

No Kafka, no Faust, no I/O, no wall clock: every function depends only on its arguments.

Each detector has the signature ``detector(state, event, config) -> RuleResult`` where
``state`` is the JSON-compatible state of one (rule, key) pair (``None`` for a new key) and
``RuleResult`` carries the new state, the ``FraudAlert`` dicts to publish, and signals for
the shell's metrics (``suppressed`` hits, ``late`` and ``duplicate`` events). The input state
is never mutated. Events that do not concern a rule (e.g. a SUCCESS login for brute force)
return the state unchanged with no signal.

Keys
    LOGIN_BRUTE_FORCE, IMPOSSIBLE_TRAVEL: Login.account (subject_type ACCOUNT)
    CREDENTIAL_STUFFING: Login.source_ip (SOURCE_IP)
    IRSF, SIMBOX: Cdr.subscriber_id (SUBSCRIBER)
    NEW_SUBSCRIBER_SPEND: subscriber_id of SubscriberCreated and RatedCdr (SUBSCRIBER)
``subject_of(rule, event)`` gives the key.

Event time
    Login, Cdr, SubscriberCreated: ``event_time``. RatedCdr has no envelope; its
    ``rated_at`` (the CDR's start_time, never the wall clock) is its event time.

Watermark and lateness
    The watermark is kept **per (rule, key)**: the maximum event time of the events the rule
    has accepted for that key. An event with ``event_time < watermark - allowed_lateness`` is
    *late*: it is ignored (state unchanged) and reported with ``late=True``. A per-key
    watermark depends only on that key's own event order, so results do not change with the
    partition count, partition assignment or the interleaving of other keys after a
    rebalance or restart; events of one key arrive in order from one partition, so it is
    the tightest watermark that is still deterministic. Events inside the lateness are
    placed by event time, so out-of-order arrival counts exactly as in-order arrival.

Merged inputs
    Two rules see one key's events from several ordered inputs: CREDENTIAL_STUFFING
    (logins of one source_ip come from every partition of sec.login.events, keyed by
    account, through a repartition; the shell passes the source partition as ``origin``)
    and NEW_SUBSCRIBER_SPEND (bss.subscriber.events and bss.cdr.rated; the origin is the
    event type). Each input is in order but they advance at their own pace (a backlog is
    consumed round-robin by record count, not by time). There the state keeps one
    watermark per origin (``wmo``): an event is late when it is older than its own
    origin's watermark minus the lateness, or older than the key's overall watermark
    minus the lateness minus ``merge_skew`` (default 1 h), which also bounds retention.

Windows
    A window of length W is half-open in event time: ``[s, s + W)``, i.e. "within 60 s"
    means the last event is less than 60 s after the first. A rule fires when an accepted
    event lies in a window, anchored on an event, that satisfies the rule. The earliest such
    window is reported: ``window_start`` = time of its first event (whose id is
    ``first_event_id``), ``window_end`` = time of its last event (inclusive), so every count
    in ``evidence`` is over events in ``[window_start, window_end]``. For
    NEW_SUBSCRIBER_SPEND the window starts at the SubscriberCreated event.

Alerts and suppression
    ``alert_id = "<rule>:<subject>:<window_start>:<window_end>"`` (deterministic, unique per
    (rule, subject) because alerts are at least the suppression time apart). The *hit time*
    of a hit is its ``window_end``. A hit whose hit time is within ``suppression`` (either
    side, strictly less) of a previous alert's hit time is *suppressed*: nothing is
    emitted, the previous alert's record in the state folds it in (``suppressed`` += 1,
    evidence = per-count maximum, ``last_window_end``) and the result reports
    ``suppressed=1``. Otherwise a new alert is emitted.

Severity (fixed per rule)
    LOGIN_BRUTE_FORCE MEDIUM; CREDENTIAL_STUFFING HIGH; IMPOSSIBLE_TRAVEL HIGH;
    IRSF CRITICAL (direct revenue loss to premium international ranges); SIMBOX HIGH;
    NEW_SUBSCRIBER_SPEND MEDIUM.

Bounded state
    Window entries older than ``watermark - lateness - W`` (``- merge_skew`` for merged
    inputs) can never share a window with an accepted event and are dropped on every update; alert records older than
    ``watermark - lateness - suppression`` can no longer suppress anything and are dropped.
    Entries per key are also capped at ``max_window_events`` (oldest dropped). So memory per
    key is bounded by the event rate inside one window, never by elapsed time.
    ``expire(rule, state, watermark, config)`` prunes a state against an outside watermark
    and returns ``None`` when nothing is left, so the shell can delete idle keys.
    Duplicate events (same event_id / cdr_id, as producers retry) are ignored.

Invalid events raise ``InvalidEvent`` (a ``ValueError``) with a reason, for the DLQ.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from typing import Any, Callable, NamedTuple

from .config import FraudConfig

LOGIN_BRUTE_FORCE = "LOGIN_BRUTE_FORCE"
CREDENTIAL_STUFFING = "CREDENTIAL_STUFFING"
IMPOSSIBLE_TRAVEL = "IMPOSSIBLE_TRAVEL"
IRSF = "IRSF"
SIMBOX = "SIMBOX"
NEW_SUBSCRIBER_SPEND = "NEW_SUBSCRIBER_SPEND"

ALL_RULES = (
    LOGIN_BRUTE_FORCE,
    CREDENTIAL_STUFFING,
    IMPOSSIBLE_TRAVEL,
    IRSF,
    SIMBOX,
    NEW_SUBSCRIBER_SPEND,
)

SEVERITY = {
    LOGIN_BRUTE_FORCE: "MEDIUM",
    CREDENTIAL_STUFFING: "HIGH",
    IMPOSSIBLE_TRAVEL: "HIGH",
    IRSF: "CRITICAL",
    SIMBOX: "HIGH",
    NEW_SUBSCRIBER_SPEND: "MEDIUM",
}

SUBJECT_TYPE = {
    LOGIN_BRUTE_FORCE: "ACCOUNT",
    CREDENTIAL_STUFFING: "SOURCE_IP",
    IMPOSSIBLE_TRAVEL: "ACCOUNT",
    IRSF: "SUBSCRIBER",
    SIMBOX: "SUBSCRIBER",
    NEW_SUBSCRIBER_SPEND: "SUBSCRIBER",
}

# Which event types each rule consumes.
INPUT_TYPES = {
    LOGIN_BRUTE_FORCE: ("Login",),
    CREDENTIAL_STUFFING: ("Login",),
    IMPOSSIBLE_TRAVEL: ("Login",),
    IRSF: ("Cdr",),
    SIMBOX: ("Cdr",),
    NEW_SUBSCRIBER_SPEND: ("SubscriberCreated", "RatedCdr"),
}

STATE_VERSION = 1


class InvalidEvent(ValueError):
    """The event cannot be evaluated (missing or mistyped field): route it to the DLQ."""


class RuleResult(NamedTuple):
    state: dict[str, Any]
    alerts: list[dict[str, Any]]
    suppressed: int = 0  # hits folded into an earlier alert instead of emitted
    late: bool = False  # event older than watermark - lateness: ignored
    duplicate: bool = False  # event id already in the window: ignored


# --------------------------------------------------------------------------- helpers


def _field(event: dict, name: str, kind: type) -> Any:
    value = event.get(name)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and (kind is not str or value != "")
    if not ok:
        raise InvalidEvent(
            f"{event.get('event_type', '?')}: field {name!r} must be a non-empty "
            f"{kind.__name__}, got {value!r}"
        )
    return value


def event_time_of(event: dict) -> int:
    """Event time (epoch ms) of any event a fraud rule consumes."""
    if event.get("event_type") == "RatedCdr":
        return _field(event, "rated_at", int)
    return _field(event, "event_time", int)


def subject_of(rule: str, event: dict) -> str:
    """The key / alert subject of ``event`` for ``rule``."""
    if rule == CREDENTIAL_STUFFING:
        return _field(event, "source_ip", str)
    if rule in (LOGIN_BRUTE_FORCE, IMPOSSIBLE_TRAVEL):
        return _field(event, "account", str)
    return _field(event, "subscriber_id", str)


def new_state() -> dict[str, Any]:
    return {"v": STATE_VERSION, "wm": None, "entries": [], "alerts": []}


def _copy(state: dict[str, Any] | None) -> dict[str, Any]:
    if state is None:
        return new_state()
    out = dict(state)
    out["entries"] = list(state.get("entries", ()))
    out["alerts"] = [dict(a, evidence=dict(a["evidence"])) for a in state.get("alerts", ())]
    if "mt" in state:
        out["mt"] = list(state["mt"])
    return out


def _is_late(
    state: dict[str, Any] | None, t: int, config: FraudConfig, origin: str | None = None
) -> bool:
    wm = None if state is None else state.get("wm")
    if wm is None:
        return False
    lateness = config.allowed_lateness_ms
    if origin is None:
        return t < wm - lateness
    if t < wm - lateness - config.merge_skew_ms:
        return True
    own = state.get("wmo", {}).get(origin)
    return own is not None and t < own - lateness


def _skew(state: dict[str, Any], config: FraudConfig) -> int:
    """Extra retention of a state fed by several origins (see "Merged inputs")."""
    return config.merge_skew_ms if "wmo" in state else 0


def _entry_key(e: list) -> tuple[int, str]:
    return (e[0], e[1])


def _contains(entries: list, t: int, event_id: str) -> bool:
    i = bisect_left(entries, t, key=lambda e: e[0])
    while i < len(entries) and entries[i][0] == t:
        if entries[i][1] == event_id:
            return True
        i += 1
    return False


def _insert(entries: list, entry: list, config: FraudConfig) -> None:
    insort(entries, entry, key=_entry_key)
    overflow = len(entries) - config.max_window_events
    if overflow > 0:
        del entries[:overflow]


def _prune_entries(entries: list, horizon: int) -> list:
    """Drop entries with time <= horizon (entries are sorted)."""
    cut = bisect_right(entries, horizon, key=lambda e: e[0])
    return entries[cut:] if cut else entries


def _prune(
    state: dict[str, Any], window_ms: int, config: FraudConfig, wm: int | None = None
) -> None:
    wm = state["wm"] if wm is None else wm
    if wm is None:
        return
    # An accepted event has t >= wm - L (- M if merged); a window holding it starts
    # after t - W.
    horizon = wm - config.allowed_lateness_ms - _skew(state, config) - window_ms
    state["entries"] = _prune_entries(state["entries"], horizon)
    if "mt" in state:
        state["mt"] = _prune_entries(state["mt"], horizon)
    _prune_alerts(state, config, wm)


def _prune_alerts(state: dict[str, Any], config: FraudConfig, wm: int | None = None) -> None:
    wm = state["wm"] if wm is None else wm
    if wm is None:
        return
    # A future hit has hit time >= wm - L (- M); an alert suppresses it if hit - at < S.
    floor = wm - config.allowed_lateness_ms - _skew(state, config) - config.suppression_ms
    state["alerts"] = [a for a in state["alerts"] if a["at"] > floor]


def _advance(state: dict[str, Any], t: int, origin: str | None = None) -> None:
    if state["wm"] is None or t > state["wm"]:
        state["wm"] = t
    if origin is not None:
        wmo = dict(state.get("wmo", {}))
        if origin not in wmo or t > wmo[origin]:
            wmo[origin] = t
        state["wmo"] = dict(sorted(wmo.items()))


class _Acc:
    """Incremental aggregate over the entries of a candidate window."""

    def add(self, e: list) -> None: ...

    def remove(self, e: list) -> None: ...

    def ok(self) -> bool: ...

    def evidence(self) -> dict[str, int]: ...


def _earliest_window(
    entries: list,
    t_new: int,
    window_ms: int,
    acc: _Acc,
    end_for: Callable[[int], int] | None = None,
) -> tuple[int, int] | None:
    """Earliest window holding an event at ``t_new`` that satisfies ``acc``.

    Candidate windows are anchored on entry times s with t_new - W < s <= t_new and hold
    the entries with s <= t < end(s), end(s) = s + W unless ``end_for`` narrows it (end must
    be non-decreasing in s). Returns the [i, j) index range of the window, or None.
    """
    n = len(entries)
    i = bisect_right(entries, t_new - window_ms, key=lambda e: e[0])
    j = i
    while i < n and entries[i][0] <= t_new:
        s = entries[i][0]
        end = s + window_ms if end_for is None else end_for(s)
        while j < n and entries[j][0] < end:
            acc.add(entries[j])
            j += 1
        if t_new < end and acc.ok():
            return i, j
        while i < n and entries[i][0] == s:
            if i < j:
                acc.remove(entries[i])
            i += 1
        if j < i:
            j = i
    return None


def _hit(
    state: dict[str, Any],
    rule: str,
    subject: str,
    window_start: int,
    window_end: int,
    evidence: dict[str, int],
    first_event_id: str,
    config: FraudConfig,
) -> tuple[list[dict[str, Any]], int]:
    """Emit an alert for a hit, or fold it into a recent alert (suppression)."""
    at = window_end
    near = [a for a in state["alerts"] if abs(at - a["at"]) < config.suppression_ms]
    if near:
        rec = min(near, key=lambda a: (abs(at - a["at"]), a["at"]))
        rec["suppressed"] += 1
        rec["last_window_end"] = max(rec["last_window_end"], window_end)
        for k, v in evidence.items():
            rec["evidence"][k] = max(rec["evidence"].get(k, v), v)
        return [], 1
    alert_id = f"{rule}:{subject}:{window_start}:{window_end}"
    state["alerts"].append(
        {
            "at": at,
            "alert_id": alert_id,
            "window_start": window_start,
            "last_window_end": window_end,
            "evidence": dict(evidence),
            "suppressed": 0,
        }
    )
    state["alerts"].sort(key=lambda a: a["at"])
    alert = {
        "event_type": "FraudAlert",
        "alert_id": alert_id,
        "rule": rule,
        "subject_type": SUBJECT_TYPE[rule],
        "subject": subject,
        "severity": SEVERITY[rule],
        "window_start": window_start,
        "window_end": window_end,
        "evidence": dict(sorted(evidence.items())),
        "first_event_id": first_event_id,
    }
    return [alert], 0


def _windowed(
    rule: str,
    state: dict[str, Any] | None,
    subject: str,
    t: int,
    entry: list,
    window_ms: int,
    acc: _Acc,
    config: FraudConfig,
    origin: str | None = None,
) -> RuleResult:
    """Common path of the sliding-window rules: late/dup check, insert, evaluate, prune."""
    if _is_late(state, t, config, origin):
        return RuleResult(state or new_state(), [], late=True)
    if state is not None and _contains(state.get("entries", []), t, entry[1]):
        return RuleResult(state, [], duplicate=True)
    st = _copy(state)
    _advance(st, t, origin)
    _prune(st, window_ms, config)
    _insert(st["entries"], entry, config)
    alerts, suppressed = _evaluate(rule, st, subject, t, window_ms, acc, config)
    return RuleResult(st, alerts, suppressed)


def _evaluate(rule, st, subject, t, window_ms, acc, config, end_for=None):
    found = _earliest_window(st["entries"], t, window_ms, acc, end_for)
    if found is None:
        return [], 0
    i, j = found
    entries = st["entries"]
    return _hit(
        st, rule, subject, entries[i][0], entries[j - 1][0], acc.evidence(), entries[i][1],
        config,
    )


# --------------------------------------------------------------------------- accumulators


class _Count(_Acc):
    def __init__(self, threshold: int, name: str):
        self.n, self.threshold, self.name = 0, threshold, name

    def add(self, e):
        self.n += 1

    def remove(self, e):
        self.n -= 1

    def ok(self):
        return self.n >= self.threshold

    def evidence(self):
        return {self.name: self.n}


class _Distinct(_Acc):
    """Count of entries and of distinct values of entry[2]."""

    def __init__(self, threshold: int, count_name: str, distinct_name: str):
        self.values: Counter = Counter()
        self.n = 0
        self.threshold, self.count_name, self.distinct_name = threshold, count_name, distinct_name

    def add(self, e):
        self.n += 1
        self.values[e[2]] += 1

    def remove(self, e):
        self.n -= 1
        self.values[e[2]] -= 1
        if self.values[e[2]] == 0:
            del self.values[e[2]]

    def ok(self):
        return len(self.values) >= self.threshold

    def evidence(self):
        return {self.count_name: self.n, self.distinct_name: len(self.values)}


class _Irsf(_Acc):
    def __init__(self, config: FraudConfig):
        self.calls = 0
        self.seconds = 0
        self.config = config

    def add(self, e):
        self.calls += 1
        self.seconds += e[2]

    def remove(self, e):
        self.calls -= 1
        self.seconds -= e[2]

    def ok(self):
        return self.calls >= self.config.irsf_calls or self.seconds >= self.config.irsf_seconds

    def evidence(self):
        return {
            "calls": self.calls,
            "seconds": self.seconds,
            "calls_trigger": int(self.calls >= self.config.irsf_calls),
            "seconds_trigger": int(self.seconds >= self.config.irsf_seconds),
        }


class _Simbox(_Distinct):
    def __init__(self, config: FraudConfig):
        super().__init__(config.simbox_distinct_numbers, "calls", "distinct_numbers")
        self.min_calls = config.simbox_calls

    def ok(self):
        return self.n >= self.min_calls and len(self.values) >= self.threshold

    def evidence(self):
        return dict(super().evidence(), mt_calls=0)


# --------------------------------------------------------------------------- login rules


def _login(event: dict) -> tuple[int, str, str]:
    if event.get("event_type") != "Login":
        raise InvalidEvent(f"expected a Login event, got {event.get('event_type')!r}")
    return (
        _field(event, "event_time", int),
        _field(event, "event_id", str),
        _field(event, "result", str),
    )


def brute_force(state: dict | None, event: dict, config: FraudConfig) -> RuleResult:
    """LOGIN_BRUTE_FORCE: >= N BAD_PASSWORD logins of one account within W."""
    t, event_id, result = _login(event)
    if result != "BAD_PASSWORD":
        return RuleResult(state or new_state(), [])
    subject = _field(event, "account", str)
    return _windowed(
        LOGIN_BRUTE_FORCE, state, subject, t, [t, event_id], config.brute_force_window_ms,
        _Count(config.brute_force_failures, "failures"), config,
    )


def credential_stuffing(
    state: dict | None, event: dict, config: FraudConfig, origin: str | None = None
) -> RuleResult:
    """CREDENTIAL_STUFFING: failed logins (any result but SUCCESS) for >= N distinct
    accounts from one source_ip within W.

    The logins of one source_ip come from every partition of sec.login.events (they are
    keyed by account) through a repartition: pass the source partition as ``origin`` so
    lateness is judged per origin (see "Merged inputs")."""
    t, event_id, result = _login(event)
    if result == "SUCCESS":
        return RuleResult(state or new_state(), [])
    subject = _field(event, "source_ip", str)
    account = _field(event, "account", str)
    return _windowed(
        CREDENTIAL_STUFFING, state, subject, t, [t, event_id, account],
        config.stuffing_window_ms,
        _Distinct(config.stuffing_accounts, "failures", "distinct_accounts"), config, origin,
    )


def impossible_travel(state: dict | None, event: dict, config: FraudConfig) -> RuleResult:
    """IMPOSSIBLE_TRAVEL: two SUCCESS logins of one account from different provinces
    within W (i.e. >= 2 distinct provinces among the SUCCESS logins of a window)."""
    t, event_id, result = _login(event)
    if result != "SUCCESS":
        return RuleResult(state or new_state(), [])
    subject = _field(event, "account", str)
    province = _field(event, "province", str)
    return _windowed(
        IMPOSSIBLE_TRAVEL, state, subject, t, [t, event_id, province], config.travel_window_ms,
        _Distinct(2, "logins", "distinct_provinces"), config,
    )


# --------------------------------------------------------------------------- CDR rules


def _cdr(event: dict) -> tuple[int, str, str, str]:
    if event.get("event_type") != "Cdr":
        raise InvalidEvent(f"expected a Cdr event, got {event.get('event_type')!r}")
    return (
        _field(event, "event_time", int),
        _field(event, "event_id", str),
        _field(event, "service", str),
        _field(event, "direction", str),
    )


def normalise_number(number: str) -> str:
    """'+881…' is written '00881…'; spaces and dashes are ignored."""
    n = number.replace(" ", "").replace("-", "")
    return "00" + n[1:] if n.startswith("+") else n


def is_high_risk(number: str | None, config: FraudConfig) -> bool:
    return bool(number) and normalise_number(number).startswith(config.irsf_prefixes)


def irsf(state: dict | None, event: dict, config: FraudConfig) -> RuleResult:
    """IRSF: >= N MO voice calls, or >= S seconds in total, to high-risk prefixes by one
    subscriber within W."""
    t, event_id, service, direction = _cdr(event)
    if service != "VOICE" or direction != "MO":
        return RuleResult(state or new_state(), [])
    called = event.get("called_number")
    if not is_high_risk(called, config):
        return RuleResult(state or new_state(), [])
    duration = event.get("duration_s") or 0
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        raise InvalidEvent(f"Cdr: field 'duration_s' must be an int >= 0, got {duration!r}")
    subject = _field(event, "subscriber_id", str)
    return _windowed(
        IRSF, state, subject, t, [t, event_id, duration], config.irsf_window_ms,
        _Irsf(config), config,
    )


def simbox(state: dict | None, event: dict, config: FraudConfig) -> RuleResult:
    """SIMBOX: within W one subscriber makes >= N MO voice calls to >= D distinct numbers
    and receives no MT voice call (no MT call between the window's first and last MO call)."""
    t, event_id, service, direction = _cdr(event)
    if service != "VOICE":
        return RuleResult(state or new_state(), [])
    subject = _field(event, "subscriber_id", str)
    window_ms = config.simbox_window_ms
    if _is_late(state, t, config):
        return RuleResult(state or new_state(), [], late=True)
    lst = "mt" if direction == "MT" else "entries"
    if state is not None and _contains(state.get(lst, []), t, event_id):
        return RuleResult(state, [], duplicate=True)
    st = _copy(state)
    st.setdefault("mt", [])
    _advance(st, t)
    _prune(st, window_ms, config)
    if direction == "MT":
        _insert(st["mt"], [t, event_id], config)
        return RuleResult(st, [])
    called = event.get("called_number")
    if not isinstance(called, str) or not called:
        raise InvalidEvent("Cdr: MO VOICE needs a non-empty 'called_number'")
    _insert(st["entries"], [t, event_id, normalise_number(called)], config)
    mt = st["mt"]

    def end_for(s: int) -> int:
        k = bisect_left(mt, s, key=lambda e: e[0])
        first_mt = mt[k][0] if k < len(mt) else None
        return s + window_ms if first_mt is None else min(s + window_ms, first_mt)

    alerts, suppressed = _evaluate(SIMBOX, st, subject, t, window_ms, _Simbox(config), config,
                                   end_for)
    return RuleResult(st, alerts, suppressed)


# --------------------------------------------------------------------------- join rule


def new_subscriber_spend(state: dict | None, event: dict, config: FraudConfig) -> RuleResult:
    """NEW_SUBSCRIBER_SPEND: a subscriber created less than W before spends >= X li (RATED
    amounts with created_at <= rated_at < created_at + W).

    Joins SubscriberCreated with RatedCdr per subscriber. Until the creation is known,
    spends are buffered only within the lateness (a creation older than that would be late
    anyway), so an established subscriber costs almost nothing. ``state["created"]`` is
    ``[created_at, event_id]``; entries are ``[rated_at, cdr_id, amount_li]``.
    """
    etype = event.get("event_type")
    window_ms = config.new_subscriber_window_ms
    if etype == "SubscriberCreated":
        t = _field(event, "event_time", int)
        event_id = _field(event, "event_id", str)
        subject = _field(event, "subscriber_id", str)
        if state is not None and state.get("created") is not None:
            return RuleResult(state, [], duplicate=state["created"][1] == event_id)
        if _is_late(state, t, config, etype):
            return RuleResult(state or new_state(), [], late=True)
        st = _copy(state)
        st["created"] = [t, event_id]
        _advance(st, t, etype)
        evaluate = True
    elif etype == "RatedCdr":
        if _field(event, "status", str) != "RATED":
            return RuleResult(state or new_state(), [])
        amount = _field(event, "amount_li", int)
        if amount <= 0:
            return RuleResult(state or new_state(), [])
        t = _field(event, "rated_at", int)
        cdr_id = _field(event, "cdr_id", str)
        subject = _field(event, "subscriber_id", str)
        if _is_late(state, t, config, etype):
            return RuleResult(state or new_state(), [], late=True)
        if state is not None and _contains(state.get("entries", []), t, cdr_id):
            return RuleResult(state, [], duplicate=True)
        st = _copy(state)
        _advance(st, t, etype)
        created = st.get("created")
        evaluate = created is None or created[0] <= t < created[0] + window_ms
        if evaluate:
            _insert(st["entries"], [t, cdr_id, amount], config)
    else:
        raise InvalidEvent(
            f"expected SubscriberCreated or RatedCdr, got {etype!r}"
        )
    _prune_spend(st, config)
    created = st.get("created")
    if not evaluate or created is None or not st["entries"]:
        return RuleResult(st, [])
    total = sum(e[2] for e in st["entries"])
    if total < config.new_subscriber_spend_li:
        return RuleResult(st, [])
    evidence = {"amount_li": total, "rated_cdrs": len(st["entries"])}
    alerts, suppressed = _hit(
        st, NEW_SUBSCRIBER_SPEND, subject, created[0], st["entries"][-1][0], evidence,
        created[1], config,
    )
    return RuleResult(st, alerts, suppressed)


def _prune_spend(st: dict[str, Any], config: FraudConfig, wm: int | None = None) -> None:
    created = st.get("created")
    wm = st["wm"] if wm is None else wm
    floor = wm - config.allowed_lateness_ms - _skew(st, config)
    if created is None:
        # A creation accepted later has created_at >= floor; earlier spends cannot join it.
        st["entries"] = [e for e in st["entries"] if e[0] >= floor]
    else:
        c, w = created[0], config.new_subscriber_window_ms
        if floor >= c + w:
            st["entries"] = []  # window closed: no accepted spend can fall inside it
            st["closed"] = True
        else:
            st["entries"] = [e for e in st["entries"] if c <= e[0] < c + w]
    _prune_alerts(st, config, wm)


# --------------------------------------------------------------------------- shell helpers

DETECTORS: dict[str, Callable[[dict | None, dict, FraudConfig], RuleResult]] = {
    LOGIN_BRUTE_FORCE: brute_force,
    CREDENTIAL_STUFFING: credential_stuffing,
    IMPOSSIBLE_TRAVEL: impossible_travel,
    IRSF: irsf,
    SIMBOX: simbox,
    NEW_SUBSCRIBER_SPEND: new_subscriber_spend,
}

_WINDOW_ATTR = {
    LOGIN_BRUTE_FORCE: "brute_force_window_ms",
    CREDENTIAL_STUFFING: "stuffing_window_ms",
    IMPOSSIBLE_TRAVEL: "travel_window_ms",
    IRSF: "irsf_window_ms",
    SIMBOX: "simbox_window_ms",
}


def is_idle(state: dict | None) -> bool:
    """True when the state holds nothing that can affect a future result."""
    if state is None:
        return True
    if state.get("entries") or state.get("mt") or state.get("alerts"):
        return False
    if state.get("created") is not None and not state.get("closed"):
        return False
    return True


def expire(rule: str, state: dict | None, watermark: int, config: FraudConfig) -> dict | None:
    """Prune ``state`` as if the key's watermark were at least ``watermark`` (e.g. the
    partition's event-time watermark, for keys that went quiet). Returns ``None`` when
    nothing is left, so the shell can delete the key. The key's own watermark is kept
    (late detection stays per key); use a conservative watermark, as a key whose events
    lag the partition by more than the window would lose its older entries."""
    if state is None:
        return None
    st = _copy(state)
    wm = watermark if st["wm"] is None else max(watermark, st["wm"])
    if rule == NEW_SUBSCRIBER_SPEND:
        _prune_spend(st, config, wm)
    else:
        _prune(st, getattr(config, _WINDOW_ATTR[rule]), config, wm)
    return None if is_idle(st) else st
