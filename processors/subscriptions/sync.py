"""One subscriber's whole subscription-sync state: order book + subscription.

``bss.order.events`` and ``bss.subscriber.events`` are both keyed (and co-partitioned) by
subscriber_id, so a single JSON-compatible value per subscriber holds everything; the
Faust shell keeps it in one table and calls :func:`process` for every input event.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from processors.subscriptions import orders, state
from processors.subscriptions.orders import DEFAULT_LIMITS, Limits, Reject


@dataclass
class SyncResult:
    order_statuses: list = field(default_factory=list)       # -> bss.order.status
    subscription_states: list = field(default_factory=list)  # -> bss.subscription.state
    views: list = field(default_factory=list)                # view records (state + product types)
    rejects: list = field(default_factory=list)              # -> <input topic>.dlq
    counters: dict = field(default_factory=dict)

    def merge_counters(self, c: dict) -> None:
        for k, v in c.items():
            self.counters[k] = self.counters.get(k, 0) + v


def new_state(subscriber_id: str) -> dict:
    return {"subscriber_id": subscriber_id, "orders": orders.new_book(),
            "sub": state.new_subscription(subscriber_id)}


def process(st: dict, event: dict, ref=None, limits: Limits = DEFAULT_LIMITS) -> SyncResult:
    """Apply one input event to ``st`` (mutated in place) and return the outputs."""
    out = SyncResult()
    et = event.get("event_type") if isinstance(event, dict) else None
    if et in orders.ORDER_EVENT_TYPES:
        r = orders.apply_order_event(st["orders"], event, ref, limits, subscriber_id=st["subscriber_id"])
        out.order_statuses.extend(r.statuses)
        out.rejects.extend(r.rejects)
        out.merge_counters(r.counters)
        for order in r.completed:
            s = state.apply_completed_order(st["sub"], order)
            out.subscription_states.extend(s.states)
            out.views.extend(s.views)
            out.merge_counters(s.counters)
    elif et in state.SUBSCRIBER_EVENT_TYPES:
        s = state.apply_subscriber_event(st["sub"], event, ref, limits)
        out.subscription_states.extend(s.states)
        out.views.extend(s.views)
        out.rejects.extend(s.rejects)
        out.merge_counters(s.counters)
    else:
        out.rejects.append(Reject(event, f"unexpected event_type {et!r}", ref))
        out.counters["invalid"] = 1
    return out
