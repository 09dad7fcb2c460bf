"""Pure rating and online-charging rules (CONTRACT §4, "Rating and online charging").

No Kafka, no Faust, no I/O, no wall clock: every function here depends only on its
arguments, so the live processor and ``telbus audit rating`` produce the same outputs
from the same log in the same order.

Data model
==========
Events are the plain dicts of docs/CONVENTIONS.md (timestamps int epoch ms UTC, money
int li).

*Plan catalog* -- ``{plan_id: [TariffPlan dict, ...]}``, versions sorted ascending.
Built with :func:`catalog_add` (which validates first, see :func:`validate_plan`). The
version applied to a CDR is the highest ``version`` whose ``effective_from <=
start_time`` (:func:`select_plan_version`); re-publishing an existing
``plan_id@version`` replaces it (the topic is compacted on that key).

*Subscriber state* -- one JSON-compatible dict per subscriber (it lives in a Faust table
backed by a changelog topic), created by :func:`new_state`::

    {
      "subscriber_id": str,
      "created": bool,             # a SubscriberCreated has been applied
      "payment_type": str | None,  # from SubscriberCreated (informational)
      "plans": [[event_time, plan_id], ...],    # sorted by event_time, stable on ties
      "statuses": [[event_time, status], ...],  # sorted by event_time, stable on ties
      "balance_li": int,
      "suspended": bool,           # a SUSPEND was emitted and no RESUME since
      "periods": {"YYYYMM": {"voice_s": int, "sms": int, "kb": int}},  # free units used
      "seen_cdrs": {cdr_id: event_time},        # RATED cdr_ids, duplicate window
      "seen_events": {event_id: event_time},    # applied BalanceRecharged event_ids
      "watermark": int | None,     # max event_time applied to this subscriber
    }

Functions never mutate the state they are given; they return ``(new_state, outputs)``
where ``outputs`` is a list of output event dicts (``"event_type": "RatedCdr"`` /
``"CreditControl"``), in the order they must be published.

Decisions (where the contract leaves room)
==========================================
* **Unknown subscriber**: a CDR is ``REJECTED/UNKNOWN_SUBSCRIBER`` when no
  SubscriberCreated has been applied for its subscriber when it is processed. A CDR of a
  known subscriber whose ``start_time`` precedes every plan assignment is ``NO_PLAN``.
  ``NO_PLAN`` is also used when the assigned plan_id has no version effective at
  ``start_time`` (or is not in the catalog); then ``plan_id`` / ``plan_version`` are
  ``None`` ("rejected without a plan").
* **TERMINATED** is checked against the status *in effect at the CDR's start_time*
  (latest StatusChanged with ``event_time <= start_time``), the same rule as the plan:
  a late CDR for usage that happened while the line was still active is rated; usage
  after termination is rejected. A later ACTIVE re-opens the line. SUSPENDED (an
  administrative status) does not reject: the contract only rejects TERMINATED.
* **Check order**: UNKNOWN_SUBSCRIBER, then DUPLICATE, then SUBSCRIBER_TERMINATED,
  then NO_PLAN. A re-sent CDR that was already charged is reported as a duplicate
  whatever happened to the subscriber since.
* **Duplicate window**: keyed by ``cdr_id`` with the CDR's envelope ``event_time``. A CDR
  is DUPLICATE when a RATED CDR with the same cdr_id has an event_time within 72 h
  (inclusive, either side) of its own. Only RATED CDRs enter the window: a REJECTED one
  charged and consumed nothing, so a re-submission after the cause was fixed (e.g. the
  SubscriberCreated arrived) must be charged -- there is nothing to double-charge.
  DUPLICATEs do not refresh the window. Entries older than ``watermark - 72 h`` are
  pruned (bounded state); the watermark is the subscriber's max applied event_time.
* **MT voice / MT SMS**: amount 0, nothing consumed, ``free_units`` 0; ``billed_units``
  is still the rounded quantity (seconds after increment rounding / 1 message) so the
  rated stream shows the usage, only its price is zero.
* **DATA has no direction exemption**: a data session is bidirectional by nature (the
  contract prices ``bytes_up + bytes_down``); the MT exemption is for terminating calls
  and messages only. DATA zone is DOMESTIC unless a ``called_number`` says otherwise.
* **Free minutes in whole increments**: the free seconds left are usable only in whole
  increments of the plan in effect: ``free_incs = min(units, remaining_s //
  increment_s)``. A remainder smaller than one increment is not usable by that call
  (it stays, e.g. for a later plan with a 6 s increment).
* **Allowance across plan changes**: per (subscriber, billing period) the state records
  the free units *consumed*; what is left is the free amount of the plan in effect
  minus that, never below 0. A plan change mid-period therefore keeps consumption.
* **Balance**: starts 0, BalanceRecharged adds, a RATED amount subtracts; threshold is
  ``-credit_limit_li`` of the plan version applied (for a CDR) or in effect at the
  recharge's event_time (for a recharge; 0 when none). A RATED CDR with amount > 0 that
  leaves the balance below the threshold while not suspended emits one SUSPEND
  (cause_event_id = the CDR's event_id); a recharge that brings a suspended subscriber
  back to >= threshold emits one RESUME (cause_event_id = the recharge's event_id). A
  plan change alone never emits credit control.
* **POSTPAID** uses exactly the same balance mechanics: the contract gives *every*
  subscriber a balance and calls a postpaid BalanceRecharged a payment. A postpaid
  plan's credit_limit_li is its credit line, so crossing it is the moment online
  charging must cut service for a postpaid line too.
* **Retried recharges**: producers retry with the same event_id, so BalanceRecharged
  event_ids applied within the last 72 h of event time are remembered and a repeat is
  ignored (a recharge must never be credited twice either).
* **Bounded state**: plan/status histories keep everything newer than ``watermark -
  HISTORY_RETENTION_MS`` plus the latest entry before it; allowance consumption is kept
  for the newest ``PERIODS_KEPT`` billing periods.
* ``rated_at`` is the CDR's start_time; ``balance_after_li`` is the balance after the
  CDR (0 for an unknown subscriber).
"""

from __future__ import annotations

import bisect
import copy
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

DUPLICATE_WINDOW_MS = 72 * 3600 * 1000
HISTORY_RETENTION_MS = 100 * 24 * 3600 * 1000
PERIODS_KEPT = 4

SERVICES = ("VOICE", "SMS", "DATA")
DIRECTIONS = ("MO", "MT")
PAYMENT_TYPES = ("PREPAID", "POSTPAID")
STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
CHANNELS = ("OUTLET", "ONLINE", "HOTLINE_10000", "APP", "BANK")
INCREMENTS = (6, 60)

SUBSCRIBER_EVENT_TYPES = ("SubscriberCreated", "PlanChanged", "StatusChanged", "BalanceRecharged")

REJECT_UNKNOWN = "UNKNOWN_SUBSCRIBER"
REJECT_TERMINATED = "SUBSCRIBER_TERMINATED"
REJECT_NO_PLAN = "NO_PLAN"

_SHANGHAI = timezone(timedelta(hours=8))  # Asia/Shanghai: UTC+8, no DST since 1991
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

State = dict[str, Any]
Catalog = Mapping[str, list[dict[str, Any]]]


# --------------------------------------------------------------------------- helpers

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_SHANGHAI_OFFSET_MS = 8 * 3600 * 1000


def billing_period(ts_ms: int) -> str:
    """``YYYYMM`` of ``ts_ms`` in Asia/Shanghai (00:00 Shanghai = 16:00 UTC the day before)."""
    return _period_of_day((ts_ms + _SHANGHAI_OFFSET_MS) // 86_400_000)


@lru_cache(maxsize=4096)
def _period_of_day(shanghai_day: int) -> str:
    # Shanghai has had no DST since 1991: a fixed +8 h offset gives the local calendar day.
    local = _EPOCH + timedelta(days=shanghai_day)
    return f"{local.year:04d}{local.month:02d}"


def copy_state(state: State) -> State:
    """A copy sharing nothing mutable with ``state``: what ``deepcopy`` gives, for the
    state's known shape, at a fraction of the cost on the per-CDR path."""
    out = dict(state)
    out["plans"] = [list(h) for h in state["plans"]]
    out["statuses"] = [list(h) for h in state["statuses"]]
    out["periods"] = {k: dict(v) for k, v in state["periods"].items()}
    out["seen_cdrs"] = dict(state["seen_cdrs"])
    out["seen_events"] = dict(state["seen_events"])
    return out


def zone_of(called_number: str | None) -> str:
    """INTERNATIONAL when the called number starts with ``00`` but not ``0086``."""
    if called_number and called_number.startswith("00") and not called_number.startswith("0086"):
        return "INTERNATIONAL"
    return "DOMESTIC"


# ----------------------------------------------------------------------- validation

def validate_plan(plan: Mapping[str, Any]) -> str | None:
    """Reason string when a TariffPlan cannot be loaded, else None."""
    if not isinstance(plan.get("plan_id"), str) or not plan.get("plan_id"):
        return "plan_id missing or empty"
    if "@" in plan["plan_id"]:
        return f"plan_id {plan['plan_id']!r} must not contain '@'"
    if not _is_int(plan.get("version")):
        return "version missing or not an integer"
    if not _is_int(plan.get("effective_from")):
        return "effective_from missing or not epoch milliseconds"
    if plan.get("payment_type") not in PAYMENT_TYPES:
        return f"payment_type {plan.get('payment_type')!r} not one of {'|'.join(PAYMENT_TYPES)}"
    cl = plan.get("credit_limit_li")
    if not _is_int(cl) or cl < 0:
        return f"credit_limit_li must be an integer >= 0, got {cl!r}"
    sections = {
        "voice": ("domestic_li_per_min", "international_li_per_min", "increment_s", "free_domestic_min"),
        "sms": ("domestic_li", "international_li", "free_domestic_sms"),
        "data": ("li_per_mb", "free_mb"),
    }
    for section, fields in sections.items():
        part = plan.get(section)
        if not isinstance(part, Mapping):
            return f"{section} tariff missing"
        for f in fields:
            v = part.get(f)
            if not _is_int(v) or v < 0:
                return f"{section}.{f} must be an integer >= 0, got {v!r}"
    inc = plan["voice"]["increment_s"]
    if inc not in INCREMENTS:
        return f"voice.increment_s must be 6 or 60, got {inc}"
    for f in ("domestic_li_per_min", "international_li_per_min"):
        rate = plan["voice"][f]
        if (rate * inc) % 60 != 0:
            return (f"voice.{f}={rate} x increment_s={inc} = {rate * inc} is not a multiple of 60: "
                    f"a {inc}s increment would cost a fraction of a li")
    return None


def validate_cdr(cdr: Mapping[str, Any]) -> str | None:
    """Reason string when a (schema-valid) CDR has impossible values, else None.

    Such CDRs are not rated: the agent sends them to ``net.cdr.raw.dlq``.
    """
    for f in ("event_id", "cdr_id", "subscriber_id"):
        v = cdr.get(f)
        if not isinstance(v, str) or not v:
            return f"{f} missing or empty"
    for f in ("event_time", "start_time"):
        if not _is_int(cdr.get(f)):
            return f"{f} missing or not epoch milliseconds"
    service, direction = cdr.get("service"), cdr.get("direction")
    if service not in SERVICES:
        return f"unknown service {service!r} (expected {'|'.join(SERVICES)})"
    if direction not in DIRECTIONS:
        return f"unknown direction {direction!r} (expected {'|'.join(DIRECTIONS)})"
    called = cdr.get("called_number")
    if called is not None and not isinstance(called, str):
        return "called_number is not a string"
    if service == "VOICE":
        d = cdr.get("duration_s")
        if d is None:
            return "VOICE CDR without duration_s"
        if not _is_int(d):
            return f"duration_s not an integer: {d!r}"
        if d < 0:
            return f"negative duration_s {d}"
    if service in ("VOICE", "SMS") and not called:
        return f"{service} CDR without called_number"
    if service == "DATA":
        for f in ("bytes_up", "bytes_down"):
            v = cdr.get(f)
            if v is None:
                return f"DATA CDR without {f}"
            if not _is_int(v):
                return f"{f} not an integer: {v!r}"
            if v < 0:
                return f"negative {f} {v}"
    return None


def validate_subscriber_event(ev: Mapping[str, Any]) -> str | None:
    """Reason string when a subscriber event cannot be applied, else None."""
    et = ev.get("event_type")
    if et not in SUBSCRIBER_EVENT_TYPES:
        return f"unexpected event type {et!r} on the subscriber stream"
    for f in ("event_id", "subscriber_id"):
        v = ev.get(f)
        if not isinstance(v, str) or not v:
            return f"{f} missing or empty"
    if not _is_int(ev.get("event_time")):
        return "event_time missing or not epoch milliseconds"
    if et in ("SubscriberCreated", "PlanChanged"):
        if not isinstance(ev.get("plan_id"), str) or not ev.get("plan_id"):
            return "plan_id missing or empty"
    if et == "SubscriberCreated" and ev.get("payment_type") not in PAYMENT_TYPES:
        return f"payment_type {ev.get('payment_type')!r} not one of {'|'.join(PAYMENT_TYPES)}"
    if et == "StatusChanged" and ev.get("status") not in STATUSES:
        return f"unknown status {ev.get('status')!r} (expected {'|'.join(STATUSES)})"
    if et == "BalanceRecharged":
        a = ev.get("amount_li")
        if not _is_int(a) or a <= 0:
            return f"amount_li must be an integer > 0, got {a!r}"
    return None


# -------------------------------------------------------------------------- catalog

def catalog_add(catalog: dict[str, list[dict[str, Any]]], plan: Mapping[str, Any]) -> str | None:
    """Validate ``plan`` and add it to ``catalog`` (in place). Returns the reason on failure
    (catalog untouched), else None. Same plan_id@version replaces the stored one."""
    reason = validate_plan(plan)
    if reason is not None:
        return reason
    p = {k: v for k, v in plan.items() if k != "event_type"}
    p = copy.deepcopy(p)
    versions = [v for v in catalog.get(p["plan_id"], []) if v["version"] != p["version"]]
    versions.append(p)
    versions.sort(key=lambda v: v["version"])
    catalog[p["plan_id"]] = versions
    return None


def select_version(versions: list[Mapping[str, Any]] | None, t: int) -> Mapping[str, Any] | None:
    """Highest version whose effective_from <= t, or None."""
    best = None
    for v in versions or ():
        if v["effective_from"] <= t and (best is None or v["version"] > best["version"]):
            best = v
    return best


def select_plan_version(catalog: Catalog, plan_id: str | None, t: int) -> Mapping[str, Any] | None:
    if plan_id is None:
        return None
    return select_version(catalog.get(plan_id), t)


# --------------------------------------------------------------------------- state

def new_state(subscriber_id: str) -> State:
    return {
        "subscriber_id": subscriber_id,
        "created": False,
        "payment_type": None,
        "plans": [],
        "statuses": [],
        "balance_li": 0,
        "suspended": False,
        "periods": {},
        "seen_cdrs": {},
        "seen_events": {},
        "watermark": None,
    }


def _in_effect(history: list[list[Any]], t: int) -> Any:
    """Value of the latest [event_time, value] entry with event_time <= t (None if none)."""
    i = bisect.bisect_right([h[0] for h in history], t)
    return history[i - 1][1] if i else None


def plan_at(state: State | None, t: int) -> str | None:
    """plan_id in effect at t (latest SubscriberCreated/PlanChanged with event_time <= t)."""
    return _in_effect(state["plans"], t) if state else None


def status_at(state: State | None, t: int) -> str | None:
    return _in_effect(state["statuses"], t) if state else None


def _insert(history: list[list[Any]], t: int, value: Any) -> None:
    """Insert keeping event_time order; on a tie the later-applied entry wins. An exact
    repeat of the latest entry at that time (a producer retry) is not added again."""
    i = bisect.bisect_right([h[0] for h in history], t)
    if i and history[i - 1] == [t, value]:
        return
    history.insert(i, [t, value])


def _advance(state: State, t: int) -> None:
    """Move the subscriber's event-time watermark and prune what fell out of retention."""
    if state["watermark"] is not None and t <= state["watermark"]:
        return
    state["watermark"] = t
    horizon = t - DUPLICATE_WINDOW_MS
    for key in ("seen_cdrs", "seen_events"):
        window = state[key]
        if any(ts < horizon for ts in window.values()):
            state[key] = {k: ts for k, ts in window.items() if ts >= horizon}
    hist_horizon = t - HISTORY_RETENTION_MS
    for key in ("plans", "statuses"):
        hist = state[key]
        i = bisect.bisect_left([h[0] for h in hist], hist_horizon)
        if i > 1:  # keep the latest entry before the horizon: it is still in effect there
            state[key] = hist[i - 1:]


def _period_usage(state: State, period: str) -> dict[str, int]:
    periods = state["periods"]
    if period not in periods:
        periods[period] = {"voice_s": 0, "sms": 0, "kb": 0}
        for old in sorted(periods)[:-PERIODS_KEPT]:
            if old != period:
                del periods[old]
    return periods[period]


def _threshold(plan: Mapping[str, Any] | None) -> int:
    return -plan["credit_limit_li"] if plan else 0


# ------------------------------------------------------------------ subscriber events

def apply_subscriber_event(state: State | None, ev: Mapping[str, Any],
                           catalog: Catalog) -> tuple[State, list[dict[str, Any]]]:
    """Apply SubscriberCreated / PlanChanged / StatusChanged / BalanceRecharged.

    ``ev`` must have passed :func:`validate_subscriber_event`. Returns the new state and
    the CreditControl outputs (a RESUME, at most)."""
    state = copy_state(state) if state is not None else new_state(ev["subscriber_id"])
    et, t = ev["event_type"], ev["event_time"]
    outputs: list[dict[str, Any]] = []
    if et == "SubscriberCreated":
        state["created"] = True
        state["payment_type"] = ev["payment_type"]
        _insert(state["plans"], t, ev["plan_id"])
    elif et == "PlanChanged":
        _insert(state["plans"], t, ev["plan_id"])
    elif et == "StatusChanged":
        _insert(state["statuses"], t, ev["status"])
    elif et == "BalanceRecharged":
        seen = state["seen_events"]
        prev = seen.get(ev["event_id"])
        if prev is not None and abs(t - prev) <= DUPLICATE_WINDOW_MS:
            _advance(state, t)
            return state, outputs  # producer retry: already credited
        seen[ev["event_id"]] = t
        state["balance_li"] += ev["amount_li"]
        threshold = _threshold(select_plan_version(catalog, plan_at(state, t), t))
        if state["suspended"] and state["balance_li"] >= threshold:
            state["suspended"] = False
            outputs.append(credit_control(state, "RESUME", threshold, ev["event_id"]))
    else:  # pragma: no cover - guarded by validate_subscriber_event
        raise ValueError(f"not a subscriber event: {et!r}")
    _advance(state, t)
    return state, outputs


def credit_control(state: State, action: str, threshold: int, cause_event_id: str) -> dict[str, Any]:
    return {
        "event_type": "CreditControl",
        "subscriber_id": state["subscriber_id"],
        "action": action,
        "balance_li": state["balance_li"],
        "threshold_li": threshold,
        "cause_event_id": cause_event_id,
    }


# ---------------------------------------------------------------------------- rating

def _rated(cdr: Mapping[str, Any], *, zone: str, billed: int = 0, free: int = 0, amount: int = 0,
           plan: Mapping[str, Any] | None = None, balance: int = 0, status: str = "RATED",
           reason: str | None = None) -> dict[str, Any]:
    return {
        "event_type": "RatedCdr",
        "cdr_id": cdr["cdr_id"],
        "subscriber_id": cdr["subscriber_id"],
        "service": cdr["service"],
        "direction": cdr["direction"],
        "zone": zone,
        "billed_units": billed,
        "free_units": free,
        "amount_li": amount,
        "plan_id": plan["plan_id"] if plan else None,
        "plan_version": plan["version"] if plan else None,
        "billing_period": billing_period(cdr["start_time"]),
        "balance_after_li": balance,
        "status": status,
        "reject_reason": reason,
        "rated_at": cdr["start_time"],
    }


def price(cdr: Mapping[str, Any], plan: Mapping[str, Any], used: Mapping[str, int]) -> tuple[int, int, int, dict[str, int]]:
    """Price one valid CDR against one plan version given the period's consumed free units.

    Returns ``(billed_units, free_units, amount_li, consumed)`` where ``consumed`` is the
    increment to add to the period's usage (keys voice_s / sms / kb)."""
    service, zone = cdr["service"], zone_of(cdr.get("called_number"))
    mo = cdr["direction"] == "MO"
    if service == "VOICE":
        v = plan["voice"]
        inc = v["increment_s"]
        units = _ceil_div(cdr["duration_s"], inc)
        billed_s = units * inc
        if not mo:
            return billed_s, 0, 0, {}
        if zone == "INTERNATIONAL":
            rate, free_s = v["international_li_per_min"], 0
        else:
            rate = v["domestic_li_per_min"]
            remaining = max(0, v["free_domestic_min"] * 60 - used.get("voice_s", 0))
            free_s = min(units, remaining // inc) * inc
        charged = billed_s - free_s
        if (charged * rate) % 60:  # impossible for a plan that passed validate_plan
            raise ValueError(f"plan {plan['plan_id']}@{plan['version']}: inexact voice amount")
        return billed_s, free_s, charged * rate // 60, ({"voice_s": free_s} if free_s else {})
    if service == "SMS":
        s = plan["sms"]
        if not mo:
            return 1, 0, 0, {}
        if zone == "INTERNATIONAL":
            return 1, 0, s["international_li"], {}
        free = 1 if s["free_domestic_sms"] - used.get("sms", 0) > 0 else 0
        return 1, free, (1 - free) * s["domestic_li"], ({"sms": 1} if free else {})
    # DATA: no direction exemption (see module docstring)
    d = plan["data"]
    kb = _ceil_div(cdr["bytes_up"] + cdr["bytes_down"], 1024)
    remaining = max(0, d["free_mb"] * 1024 - used.get("kb", 0))
    free_kb = min(kb, remaining)
    amount = _ceil_div((kb - free_kb) * d["li_per_mb"], 1024)
    return kb, free_kb, amount, ({"kb": free_kb} if free_kb else {})


def rate_cdr(state: State | None, cdr: Mapping[str, Any],
             catalog: Catalog) -> tuple[State | None, list[dict[str, Any]]]:
    """Rate one CDR (which must have passed :func:`validate_cdr`).

    Returns the new state (None stays None for an unknown subscriber: no state is created
    for it) and ``[RatedCdr]`` or ``[RatedCdr, CreditControl(SUSPEND)]``."""
    zone = zone_of(cdr.get("called_number"))
    if state is None or not state["created"]:
        balance = state["balance_li"] if state is not None else 0
        return state, [_rated(cdr, zone=zone, balance=balance, status="REJECTED", reason=REJECT_UNKNOWN)]
    state = copy_state(state)
    t_start, t_event = cdr["start_time"], cdr["event_time"]
    plan_id = plan_at(state, t_start)
    plan = select_plan_version(catalog, plan_id, t_start)

    prev = state["seen_cdrs"].get(cdr["cdr_id"])
    if prev is not None and abs(t_event - prev) <= DUPLICATE_WINDOW_MS:
        out = _rated(cdr, zone=zone, plan=plan, balance=state["balance_li"], status="DUPLICATE")
        _advance(state, t_event)
        return state, [out]
    if status_at(state, t_start) == "TERMINATED":
        out = _rated(cdr, zone=zone, plan=plan, balance=state["balance_li"], status="REJECTED",
                     reason=REJECT_TERMINATED)
        _advance(state, t_event)
        return state, [out]
    if plan is None:
        out = _rated(cdr, zone=zone, balance=state["balance_li"], status="REJECTED", reason=REJECT_NO_PLAN)
        _advance(state, t_event)
        return state, [out]

    period = billing_period(t_start)
    used = _period_usage(state, period)
    billed, free, amount, consumed = price(cdr, plan, used)
    for k, n in consumed.items():
        used[k] = used.get(k, 0) + n
    state["balance_li"] -= amount
    state["seen_cdrs"][cdr["cdr_id"]] = t_event
    outputs = [_rated(cdr, zone=zone, billed=billed, free=free, amount=amount, plan=plan,
                      balance=state["balance_li"])]
    threshold = _threshold(plan)
    if amount > 0 and not state["suspended"] and state["balance_li"] < threshold:
        state["suspended"] = True
        outputs.append(credit_control(state, "SUSPEND", threshold, cdr["event_id"]))
    _advance(state, t_event)
    return state, outputs


# ------------------------------------------------------------------------- dispatch

def order_key(event: Mapping[str, Any], offset: int = 0) -> tuple[int, int, int]:
    """Sort key for re-rating from the log: event time, then plans < subscriber events <
    CDRs, then offset (CONTRACT §4)."""
    rank = {"TariffPlan": 0, "Cdr": 2}.get(event.get("event_type"), 1)
    return (event["event_time"], rank, offset)
