"""SubscriptionState per subscriber (pure logic: no Kafka, no I/O, no wall clock).

Inputs: SubscriberCreated / PlanChanged / StatusChanged (``bss.subscriber.events``) and
COMPLETED orders (from :mod:`processors.subscriptions.orders`).  BalanceRecharged never
changes the subscription (counted, ignored).

The per-subscriber state is a JSON-compatible dict mutated in place.  Every *visible*
change publishes a new ``SubscriptionState`` with ``version`` = previous + 1; an input
that leaves the published record unchanged publishes nothing.

Decisions:

* **Publication starts with SubscriberCreated.**  ``status`` and ``broadband_type`` are
  required in SubscriptionState, so nothing is published for a subscriber whose
  SubscriberCreated has not arrived yet.  Order results and plan/status changes that
  arrive first (the two input topics are co-partitioned but not ordered against each
  other) are kept in the state and appear in version 1, published by SubscriberCreated.
* **Fields are last-writer-wins by event time.**  Identity fields (msisdn, payment type,
  broadband account/type), ``plan_id`` and ``status`` each remember the event time that
  set them; an older event arriving late does not overwrite a newer value (counted as
  ``stale_event``, no output).  Ties go to the later arrival.
* **Products** follow completed orders in completion order: ADD adds the product (and
  remembers its product type for the views); ADD of a product already held is a counted
  no-op (``add_present``, type unchanged); REMOVE of a product not held is a counted
  no-op (``remove_absent``).  An order changing several products publishes one version.
* **updated_at** is the event time of the change's cause (the SubscriberCreated /
  PlanChanged / StatusChanged, or the event that completed the order), except that it
  never goes backwards per subscriber: a cause older than the previous version (skew
  between the two topics) keeps the previous ``updated_at``.  This keeps ``--since TIME``
  exports meaningful.
* **Duplicates** (same ``event_id``) are counted no-ops; seen ids are bounded like the
  order book's (event-time window + count cap).
* Determinism: the state and every published record depend only on the input sequence,
  so replaying the same inputs rebuilds identical states and versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from processors.subscriptions.orders import (DEFAULT_LIMITS, InvalidEvent, Limits, Reject,
                                             _req_str, validate_envelope)

SUBSCRIBER_EVENT_TYPES = ("SubscriberCreated", "PlanChanged", "StatusChanged", "BalanceRecharged")
STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
PAYMENT_TYPES = ("PREPAID", "POSTPAID")
BROADBAND_TYPES = ("E8_1", "E8_2", "E6", "NONE")

STATE_FIELDS = ("subscriber_id", "msisdn", "status", "plan_id", "payment_type",
                "broadband_account", "broadband_type", "products", "version", "updated_at")


@dataclass
class StateResult:
    states: list = field(default_factory=list)   # SubscriptionState dicts
    views: list = field(default_factory=list)    # view records (state + product_types), same order
    rejects: list = field(default_factory=list)
    counters: dict = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


def new_subscription(subscriber_id: str) -> dict:
    return {
        "subscriber_id": subscriber_id,
        "created": False,
        "msisdn": None,
        "account_id": None,
        "payment_type": None,
        "broadband_account": None,
        "broadband_type": "NONE",
        "ident_time": None,
        "plan_id": None,
        "plan_time": None,
        "status": "ACTIVE",
        "status_time": None,
        "products": {},  # product_id -> product_type
        "version": 0,
        "updated_at": None,
        "seen": {},
        "clock": None,
    }


def projection(sub: dict) -> dict:
    """The visible part of SubscriptionState (everything except version/updated_at)."""
    return {
        "subscriber_id": sub["subscriber_id"],
        "msisdn": sub["msisdn"],
        "status": sub["status"],
        "plan_id": sub["plan_id"],
        "payment_type": sub["payment_type"],
        "broadband_account": sub["broadband_account"],
        "broadband_type": sub["broadband_type"],
        "products": sorted(sub["products"]),
    }


def subscription_state(sub: dict) -> dict:
    """The last published SubscriptionState record of ``sub`` (None before version 1)."""
    if not sub["version"]:
        return None
    rec = {"event_type": "SubscriptionState"}
    rec.update(projection(sub))
    rec["version"] = sub["version"]
    rec["updated_at"] = sub["updated_at"]
    return rec


def view_record(sub: dict) -> dict:
    """SubscriptionState plus the product types the views filter on."""
    rec = subscription_state(sub)
    if rec is None:
        return None
    rec["product_types"] = {p: sub["products"][p] for p in sorted(sub["products"])}
    return rec


def _publish_if_changed(sub: dict, before: dict | None, cause_time: int, res: StateResult) -> None:
    if not sub["created"]:
        return
    after = projection(sub)
    if before is not None and after == before and sub["version"]:
        return
    sub["version"] += 1
    prev = sub["updated_at"]
    sub["updated_at"] = cause_time if prev is None else max(prev, cause_time)
    res.states.append(subscription_state(sub))
    res.views.append(view_record(sub))
    res.count("state_published")


def _bump_clock(sub: dict, t: int) -> None:
    sub["clock"] = t if sub["clock"] is None else max(sub["clock"], t)


def _expire_seen(sub: dict, limits: Limits) -> None:
    seen = sub["seen"]
    horizon = sub["clock"] - limits.dedup_window_ms
    for eid in [e for e, et in seen.items() if et < horizon]:
        del seen[eid]
    if len(seen) > limits.max_seen:
        for eid, _ in sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))[: len(seen) - limits.max_seen]:
            del seen[eid]


def _validate(event: dict) -> None:
    validate_envelope(event)
    et = event.get("event_type")
    if et not in SUBSCRIBER_EVENT_TYPES:
        raise InvalidEvent(f"unexpected event_type {et!r} on subscriber events")
    _req_str(event, "subscriber_id")
    if et == "SubscriberCreated":
        _req_str(event, "msisdn")
        _req_str(event, "plan_id")
        if event.get("payment_type") not in PAYMENT_TYPES:
            raise InvalidEvent(f"SubscriberCreated: payment_type {event.get('payment_type')!r} unknown")
        if event.get("broadband_type") not in BROADBAND_TYPES:
            raise InvalidEvent(f"SubscriberCreated: broadband_type {event.get('broadband_type')!r} unknown")
    elif et == "PlanChanged":
        _req_str(event, "plan_id")
    elif et == "StatusChanged":
        if event.get("status") not in STATUSES:
            raise InvalidEvent(f"StatusChanged: status {event.get('status')!r} unknown")


def _newer(prev_time, t) -> bool:
    return prev_time is None or t >= prev_time


def apply_subscriber_event(sub: dict, event: dict, ref=None,
                           limits: Limits = DEFAULT_LIMITS) -> StateResult:
    res = StateResult()
    try:
        _validate(event)
    except InvalidEvent as e:
        res.rejects.append(Reject(event, f"invalid event: {e}", ref))
        res.count("invalid")
        return res
    if event["subscriber_id"] != sub["subscriber_id"]:
        res.rejects.append(Reject(event, f"subscriber_id {event['subscriber_id']!r} does not match "
                                         f"message key {sub['subscriber_id']!r}", ref))
        res.count("invalid")
        return res
    et = event["event_type"]
    if et == "BalanceRecharged":
        res.count("balance_ignored")
        return res
    eid = event["event_id"]
    if eid in sub["seen"]:
        res.count("duplicate_event")
        return res
    t = event["event_time"]
    sub["seen"][eid] = t
    _bump_clock(sub, t)
    before = projection(sub) if sub["version"] else None
    applied = False
    if et == "SubscriberCreated":
        sub["created"] = True
        if _newer(sub["ident_time"], t):
            sub["ident_time"] = t
            sub["msisdn"] = event["msisdn"]
            sub["account_id"] = event.get("account_id")
            sub["payment_type"] = event["payment_type"]
            sub["broadband_account"] = event.get("broadband_account") or None
            sub["broadband_type"] = event["broadband_type"]
            applied = True
        if _newer(sub["plan_time"], t):
            sub["plan_time"] = t
            sub["plan_id"] = event["plan_id"]
            applied = True
        if _newer(sub["status_time"], t):
            sub["status_time"] = t
            sub["status"] = "ACTIVE"
            applied = True
        applied = applied or not sub["version"]
    elif et == "PlanChanged":
        if _newer(sub["plan_time"], t):
            sub["plan_time"] = t
            sub["plan_id"] = event["plan_id"]
            applied = True
    else:  # StatusChanged
        if _newer(sub["status_time"], t):
            sub["status_time"] = t
            sub["status"] = event["status"]
            applied = True
    if not applied:
        res.count("stale_event")
    else:
        _publish_if_changed(sub, before, t, res)
    _expire_seen(sub, limits)
    return res


def apply_completed_order(sub: dict, order: dict, cause_time: int | None = None) -> StateResult:
    """Apply the items of a COMPLETED order (ADD/REMOVE) and publish if anything changed."""
    res = StateResult()
    t = order.get("updated_at") if cause_time is None else cause_time
    before = projection(sub) if sub["version"] else None
    changed = False
    for item in order["items"]:
        pid = item["product_id"]
        if item["action"] == "ADD":
            if pid in sub["products"]:
                res.count("add_present")
            else:
                sub["products"][pid] = item["product_type"]
                changed = True
        else:
            if pid in sub["products"]:
                del sub["products"][pid]
                changed = True
            else:
                res.count("remove_absent")
    if t is not None:
        _bump_clock(sub, t)
    if changed:
        if not sub["created"]:
            res.count("change_before_created")
        _publish_if_changed(sub, before, t, res)
    return res
