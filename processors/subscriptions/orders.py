"""Order state machine (pure logic: no Kafka, no I/O, no wall clock).

One ``book`` per subscriber (``bss.order.events`` is keyed by subscriber_id, so every
event of an order reaches the same book).  The book is a JSON-compatible dict and is
mutated in place by :func:`apply_order_event`, which returns what to publish.

Status machine (CONTRACT §4 "Subscription sync")::

    SUBMITTED --first WorkOrderDispatched--> IN_PROGRESS
    IN_PROGRESS --every dispatched work order SUCCESS--> COMPLETED
    SUBMITTED/IN_PROGRESS --any work order FAILED--> FAILED

An ``OrderStatus`` dict is emitted on every change (``updated_at`` = event time of the
event that caused it).  A FAILED order that learns about a further failed work order
emits FAILED again with the longer ``failed_work_orders`` list.

Decisions (documented, tested in tests/unit/test_subscriptions_orders.py):

* **Order with no work order / which work orders.**  The provisioning catalog
  (:mod:`processors.subscriptions.products`, ``Limits.product_targets``) says which
  target systems an order's items are provisioned on.  An order whose items all need no
  provisioning (including an order with no item) goes SUBMITTED -> COMPLETED on the
  OrderSubmitted itself.  An order whose products are all catalogued completes when a
  work order was dispatched for every expected target system and every dispatched work
  order succeeded (so a work order that succeeds before its sibling is dispatched does
  not complete the order early).  An order with an uncatalogued product falls back to
  the contract's literal rule: COMPLETED when every dispatched work order succeeded
  (after at least one dispatch).  A work order that arrives for an order already
  COMPLETED cannot undo it (the subscription already changed): it goes to the DLQ with
  reason ``work order ... dispatched after order ... COMPLETED`` and changes nothing.
* **Closed orders.**  COMPLETED: a new work order (dispatch or completion) or a
  conflicting result goes to the DLQ; a repeated identical result is a counted no-op.
  FAILED: the order is final, but late dispatches/completions of its other work orders
  are legitimate traffic, recorded without a status change (a further FAILED result
  extends ``failed_work_orders`` and re-emits FAILED).
* **Out-of-order arrival.**  A WorkOrderDispatched/WorkOrderCompleted for an order not
  yet submitted, or a WorkOrderCompleted for a work order not yet dispatched (of an
  open order), is *held pending* in the book and applied as soon as its prerequisite
  arrives (held dispatches first, then held completions, each in event-time order,
  until nothing more applies).
  Bounds: a held event is kept at most ``pending_ttl_ms`` of event time (measured
  against the newest event_time seen for the subscriber) and at most ``max_pending``
  events per subscriber (oldest evicted first).  Expired or evicted held events go to
  the DLQ with reason ``unknown order`` / ``unknown work order`` - this is how a
  WorkOrderCompleted for an unknown order or work order ends up: held, then DLQ, never
  applied to state.
* **Duplicates.**  An ``event_id`` already seen is a counted no-op.  Seen ids are kept
  ``dedup_window_ms`` of event time and at most ``max_seen`` per subscriber.  A second
  OrderSubmitted for an existing order_id (new event_id) goes to the DLQ.  A second
  dispatch of the same work order, or the same result reported twice, is a counted
  no-op; a different result for a work order that already has one goes to the DLQ
  (first result wins).
* **Retention.**  Closed orders are kept ``closed_retention_ms`` of event time after
  closing (to recognise late duplicates), open orders are dropped after
  ``open_order_ttl_ms`` without any event (counted).  All of it is driven by event time
  only, so replaying the same log rebuilds the same book and outputs.

Rejections are returned as :class:`Reject` (event, reason, the caller's opaque ``ref``,
e.g. where the original bytes are), for the shell to route to ``bss.order.events.dlq``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from processors.subscriptions.products import DEFAULT_PRODUCT_TARGETS, expected_targets

SUBMITTED = "SUBMITTED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
OPEN = (SUBMITTED, IN_PROGRESS)

ORDER_EVENT_TYPES = ("OrderSubmitted", "WorkOrderDispatched", "WorkOrderCompleted")
ACTIONS = ("ADD", "REMOVE")
PRODUCT_TYPES = ("VAS", "BROADBAND", "EHOME_VOIP", "SECURITY", "CONTENT")
RESULTS = ("SUCCESS", "FAILED")

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Limits:
    pending_ttl_ms: int = DAY_MS
    max_pending: int = 200
    dedup_window_ms: int = 7 * DAY_MS
    max_seen: int = 1000
    closed_retention_ms: int = 7 * DAY_MS
    open_order_ttl_ms: int = 30 * DAY_MS
    #: product_id -> target systems; see processors.subscriptions.products
    product_targets: Mapping = field(default_factory=lambda: DEFAULT_PRODUCT_TARGETS)


DEFAULT_LIMITS = Limits()


@dataclass
class Reject:
    event: dict
    reason: str
    ref: object = None


@dataclass
class OrderResult:
    statuses: list = field(default_factory=list)   # OrderStatus dicts, in emission order
    completed: list = field(default_factory=list)  # order dicts that just became COMPLETED
    rejects: list = field(default_factory=list)    # Reject
    counters: dict = field(default_factory=dict)   # name -> increment

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class InvalidEvent(ValueError):
    pass


def new_book() -> dict:
    return {"orders": {}, "pending": [], "seen": {}, "clock": None, "seq": 0}


# --------------------------------------------------------------------------- validation

def _req_str(event: dict, name: str) -> str:
    v = event.get(name)
    if not isinstance(v, str) or not v:
        raise InvalidEvent(f"{event.get('event_type')}: field {name!r} missing or not a non-empty string")
    return v


def validate_envelope(event: dict) -> None:
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a record")
    _req_str(event, "event_id")
    t = event.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        raise InvalidEvent(f"{event.get('event_type')}: event_time missing or not epoch millis")


def validate_order_event(event: dict) -> None:
    validate_envelope(event)
    et = event.get("event_type")
    if et not in ORDER_EVENT_TYPES:
        raise InvalidEvent(f"unexpected event_type {et!r} on order events")
    _req_str(event, "order_id")
    if et == "OrderSubmitted":
        _req_str(event, "subscriber_id")
        items = event.get("items")
        if not isinstance(items, list):
            raise InvalidEvent("OrderSubmitted: items is not a list")
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise InvalidEvent(f"OrderSubmitted: items[{i}] is not a record")
            if it.get("action") not in ACTIONS:
                raise InvalidEvent(f"OrderSubmitted: items[{i}].action {it.get('action')!r} not ADD|REMOVE")
            if not isinstance(it.get("product_id"), str) or not it["product_id"]:
                raise InvalidEvent(f"OrderSubmitted: items[{i}].product_id missing")
            if it.get("product_type") not in PRODUCT_TYPES:
                raise InvalidEvent(f"OrderSubmitted: items[{i}].product_type {it.get('product_type')!r} unknown")
    else:
        _req_str(event, "work_order_id")
        if et == "WorkOrderCompleted" and event.get("result") not in RESULTS:
            raise InvalidEvent(f"WorkOrderCompleted: result {event.get('result')!r} not SUCCESS|FAILED")


# --------------------------------------------------------------------------- outputs

def order_status(order: dict) -> dict:
    return {
        "event_type": "OrderStatus",
        "order_id": order["order_id"],
        "subscriber_id": order["subscriber_id"],
        "status": order["status"],
        "failed_work_orders": sorted(order["failed_work_orders"]),
        "updated_at": order["updated_at"],
    }


def _set_status(order: dict, status: str, t: int, res: OrderResult) -> None:
    order["status"] = status
    order["updated_at"] = t
    order["last_event_at"] = max(order.get("last_event_at") or t, t)
    if status in (COMPLETED, FAILED) and order.get("closed_at") is None:
        order["closed_at"] = t
    res.statuses.append(order_status(order))
    res.count(f"order_{status.lower()}")
    if status == COMPLETED:
        res.completed.append(dict(order, items=[dict(i) for i in order["items"]]))


# --------------------------------------------------------------------------- apply

_HOLD = object()  # sentinel: prerequisite missing, keep the event pending


def apply_order_event(book: dict, event: dict, ref=None, limits: Limits = DEFAULT_LIMITS,
                      subscriber_id: str | None = None) -> OrderResult:
    """Apply one order event to ``book`` (mutated) and return what to publish.

    ``subscriber_id`` is the message key; when given, an event naming another subscriber
    (OrderSubmitted, or a work-order event carrying the optional subscriber_id) is
    rejected: it would otherwise live in the wrong book.
    """
    res = OrderResult()
    try:
        validate_order_event(event)
    except InvalidEvent as e:
        res.rejects.append(Reject(event, f"invalid event: {e}", ref))
        res.count("invalid")
        return res
    if (subscriber_id is not None and event.get("subscriber_id") is not None
            and event["subscriber_id"] != subscriber_id):
        res.rejects.append(Reject(event, f"invalid: {event['event_type']}.subscriber_id {event['subscriber_id']!r} "
                                         f"does not match message key {subscriber_id!r}", ref))
        res.count("invalid")
        return res

    eid = event["event_id"]
    if eid in book["seen"]:
        res.count("duplicate_event")
        return res
    book["seen"][eid] = event["event_time"]
    t = event["event_time"]
    book["clock"] = t if book["clock"] is None else max(book["clock"], t)

    if _route(book, event, ref, res, limits) is _HOLD:
        book["seq"] += 1
        book["pending"].append({"seq": book["seq"], "order_id": event["order_id"],
                                "event": event, "ref": ref})
        res.count("held_pending")
    _expire(book, res, limits)
    return res


def _route(book: dict, event: dict, ref, res: OrderResult, limits: Limits):
    et = event["event_type"]
    oid = event["order_id"]
    order = book["orders"].get(oid)
    if et == "OrderSubmitted":
        if order is not None:
            res.rejects.append(Reject(event, f"order {oid} already submitted (event {event['event_id']} repeats it)", ref))
            res.count("duplicate_order")
            return None
        _submit(book, event, res, limits)
        _drain(book, oid, res)
        return None
    if order is None:
        return _HOLD
    if et == "WorkOrderDispatched":
        if _dispatch(order, event, ref, res) is not _HOLD:
            _drain(book, oid, res)
            return None
        return _HOLD
    return _complete(order, event, ref, res)


def _submit(book: dict, event: dict, res: OrderResult, limits: Limits) -> None:
    t = event["event_time"]
    order = {
        "order_id": event["order_id"],
        "subscriber_id": event["subscriber_id"],
        "status": SUBMITTED,
        "items": [{"action": i["action"], "product_id": i["product_id"],
                   "product_type": i["product_type"]} for i in event["items"]],
        "work_orders": {},
        "failed_work_orders": [],
        "expected_targets": expected_targets(event["items"], limits.product_targets),
        "submitted_at": t,
        "updated_at": t,
        "last_event_at": t,
        "closed_at": None,
    }
    book["orders"][order["order_id"]] = order
    _set_status(order, SUBMITTED, t, res)
    if _completes_on_submit(order, limits):
        _set_status(order, COMPLETED, t, res)


def _completes_on_submit(order: dict, limits: Limits) -> bool:
    return not order["items"] or order["expected_targets"] == []


def _all_expected_dispatched(order: dict) -> bool:
    expected = order.get("expected_targets")
    if not expected:
        return True
    have = {w["target_system"] for w in order["work_orders"].values() if w.get("dispatched")}
    return set(expected) <= have


def _touch(order: dict, t: int) -> None:
    order["last_event_at"] = max(order.get("last_event_at") or t, t)


def _dispatch(order: dict, event: dict, ref, res: OrderResult):
    wid = event["work_order_id"]
    t = event["event_time"]
    wo = order["work_orders"].get(wid)
    if wo is not None and wo.get("dispatched"):
        res.count("duplicate_dispatch")
        return None
    if order["status"] == COMPLETED:
        res.rejects.append(Reject(event, f"work order {wid} dispatched after order {order['order_id']} "
                                         f"COMPLETED; ignored", ref))
        res.count("late_work_order")
        return None
    _touch(order, t)
    if wo is None:
        order["work_orders"][wid] = {"target_system": event.get("target_system"),
                                     "dispatched": True, "result": None}
    else:  # FAILED order that recorded the completion before the dispatch
        wo["dispatched"] = True
        wo["target_system"] = event.get("target_system")
    if order["status"] == SUBMITTED:
        _set_status(order, IN_PROGRESS, t, res)
    return None


def _complete(order: dict, event: dict, ref, res: OrderResult):
    wid = event["work_order_id"]
    t = event["event_time"]
    result = event["result"]
    oid = order["order_id"]
    wo = order["work_orders"].get(wid)
    if wo is None:
        if order["status"] == COMPLETED:
            res.rejects.append(Reject(event, f"unknown work order {wid} for order {oid}, which is "
                                             f"already COMPLETED", ref))
            res.count("late_work_order")
            return None
        if order["status"] != FAILED:
            return _HOLD
        wo = order["work_orders"][wid] = {"target_system": None, "dispatched": False, "result": None}
    if wo["result"] is not None:
        if wo["result"] == result:
            res.count("duplicate_result")
        else:
            res.rejects.append(Reject(event, f"conflicting result {result} for work order {wid} of order "
                                             f"{oid}: already {wo['result']} (first result wins)", ref))
            res.count("conflicting_result")
        return None
    _touch(order, t)
    wo["result"] = result
    if result == "FAILED":
        order["failed_work_orders"] = sorted(set(order["failed_work_orders"]) | {wid})
        _set_status(order, FAILED, t, res)
        return None
    if (order["status"] in OPEN and all(w["result"] == "SUCCESS" for w in order["work_orders"].values())
            and _all_expected_dispatched(order)):
        _set_status(order, COMPLETED, t, res)
    return None


def _held_order(p: dict):
    ev = p["event"]
    return (ev["event_type"] != "WorkOrderDispatched", ev["event_time"], p["seq"])


def _drain(book: dict, oid: str, res: OrderResult) -> None:
    """Retry held events of order ``oid`` until none applies any more.

    Held dispatches are applied before held completions (all of them arrived before the
    event that releases them, so the order is known to have those work orders), each kind
    in event-time order, ties in arrival order.
    """
    progress = True
    while progress:
        progress = False
        for p in sorted((p for p in book["pending"] if p["order_id"] == oid), key=_held_order):
            order = book["orders"].get(oid)
            ev = p["event"]
            if order is None:
                return
            if ev["event_type"] == "WorkOrderDispatched":
                out = _dispatch(order, ev, p["ref"], res)
            else:
                out = _complete(order, ev, p["ref"], res)
            if out is _HOLD:
                continue
            book["pending"].remove(p)
            res.count("applied_from_pending")
            progress = True
            break  # list changed; rescan from the oldest


def _held_reason(book: dict, p: dict, why: str) -> str:
    ev = p["event"]
    oid = p["order_id"]
    if oid not in book["orders"]:
        what = f"unknown order {oid}"
    else:
        what = f"unknown work order {ev.get('work_order_id')} of order {oid}"
    return f"{ev['event_type']} for {what}: {why}"


def _expire(book: dict, res: OrderResult, limits: Limits) -> None:
    clock = book["clock"]
    if clock is None:
        return
    # held events: TTL, then count cap (oldest first)
    keep = []
    for p in book["pending"]:
        if p["event"]["event_time"] < clock - limits.pending_ttl_ms:
            res.rejects.append(Reject(p["event"], _held_reason(
                book, p, f"prerequisite not seen within {limits.pending_ttl_ms // HOUR_MS} h of event time"), p["ref"]))
            res.count("pending_expired")
        else:
            keep.append(p)
    while len(keep) > limits.max_pending:
        p = keep.pop(0)
        res.rejects.append(Reject(p["event"], _held_reason(
            book, p, f"more than {limits.max_pending} events held for this subscriber; oldest evicted"), p["ref"]))
        res.count("pending_evicted")
    book["pending"] = keep
    # seen ids
    seen = book["seen"]
    horizon = clock - limits.dedup_window_ms
    for eid in [e for e, et in seen.items() if et < horizon]:
        del seen[eid]
    if len(seen) > limits.max_seen:
        for eid, _ in sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))[: len(seen) - limits.max_seen]:
            del seen[eid]
    # orders
    for oid in sorted(book["orders"]):
        o = book["orders"][oid]
        if o["closed_at"] is not None:
            if o["last_event_at"] < clock - limits.closed_retention_ms:
                del book["orders"][oid]
                res.count("closed_order_expired")
        elif o["last_event_at"] < clock - limits.open_order_ttl_ms:
            del book["orders"][oid]
            res.count("open_order_expired")
