"""Order state machine: processors/subscriptions/orders.py (pure, no broker)."""
import json

from processors.subscriptions.orders import DAY_MS, Limits, apply_order_event, new_book

T0 = 1_790_000_000_000
SID = "S1"


def submitted(oid="O1", items=None, t=T0, eid=None, sid=SID):
    if items is None:
        items = [{"action": "ADD", "product_id": "P1", "product_type": "VAS"}]
    return {"event_type": "OrderSubmitted", "event_id": eid or f"sub-{oid}", "event_time": t,
            "source": "CRM-GD", "order_id": oid, "subscriber_id": sid, "channel": "APP", "items": items}


def dispatched(wid, oid="O1", t=T0 + 1000, eid=None):
    return {"event_type": "WorkOrderDispatched", "event_id": eid or f"dis-{oid}-{wid}", "event_time": t,
            "source": "IBSS", "order_id": oid, "work_order_id": wid, "target_system": "ISMP"}


def completed(wid, oid="O1", result="SUCCESS", t=T0 + 2000, eid=None):
    return {"event_type": "WorkOrderCompleted", "event_id": eid or f"com-{oid}-{wid}-{result}",
            "event_time": t, "source": "ISMP", "order_id": oid, "work_order_id": wid,
            "result": result, "error": None if result == "SUCCESS" else "platform said no"}


def run(events, book=None, limits=Limits()):
    book = new_book() if book is None else book
    statuses, completed_orders, rejects, counters = [], [], [], {}
    for e in events:
        r = apply_order_event(book, e, ref={"id": e.get("event_id")}, limits=limits, subscriber_id=SID)
        statuses += r.statuses
        completed_orders += r.completed
        rejects += r.rejects
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
        json.dumps(book)  # state stays JSON-serialisable
    return book, statuses, completed_orders, rejects, counters


def seq(statuses, oid="O1"):
    return [s["status"] for s in statuses if s["order_id"] == oid]


def test_two_work_orders_succeed():
    _, st, done, rej, _ = run([submitted(), dispatched("W1"), dispatched("W2", t=T0 + 1100),
                               completed("W1", t=T0 + 2000), completed("W2", t=T0 + 3000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert st[-1] == {"event_type": "OrderStatus", "order_id": "O1", "subscriber_id": SID,
                      "status": "COMPLETED", "failed_work_orders": [], "updated_at": T0 + 3000}
    assert [s["updated_at"] for s in st] == [T0, T0 + 1000, T0 + 3000]
    assert [o["order_id"] for o in done] == ["O1"] and not rej


def test_one_work_order_fails():
    _, st, done, rej, _ = run([submitted(), dispatched("W1"), dispatched("W2"),
                               completed("W2", result="FAILED", t=T0 + 2500), completed("W1", t=T0 + 3000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "FAILED"]
    assert st[-1]["failed_work_orders"] == ["W2"] and st[-1]["updated_at"] == T0 + 2500
    assert done == [] and rej == []  # late success of the other work order: recorded, no output


def test_second_failure_extends_failed_list():
    _, st, _, rej, _ = run([submitted(), dispatched("W1"), dispatched("W2"),
                            completed("W2", result="FAILED"), completed("W1", result="FAILED", t=T0 + 4000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "FAILED", "FAILED"]
    assert st[-1]["failed_work_orders"] == ["W1", "W2"] and not rej


def test_no_work_order_completes_on_submit():
    _, st, done, rej, _ = run([submitted(items=[])])
    assert seq(st) == ["SUBMITTED", "COMPLETED"]
    assert all(s["updated_at"] == T0 for s in st) and len(done) == 1 and not rej


def test_products_without_provisioning_complete_on_submit_and_late_dispatch_is_dlq():
    items = [{"action": "ADD", "product_id": "VAS-BILL-REMINDER", "product_type": "VAS"},
             {"action": "ADD", "product_id": "SECURITY-ANTI-FRAUD", "product_type": "SECURITY"}]
    book, st, done, rej, c = run([submitted(items=items), dispatched("W9")])
    assert seq(st) == ["SUBMITTED", "COMPLETED"] and len(done) == 1
    assert len(rej) == 1 and "after order O1 COMPLETED" in rej[0].reason
    assert rej[0].ref == {"id": "dis-O1-W9"}
    assert book["orders"]["O1"]["status"] == "COMPLETED" and c["late_work_order"] == 1


def test_catalogued_order_waits_for_every_expected_target():
    items = [{"action": "ADD", "product_id": "BROADBAND-300M", "product_type": "BROADBAND"}]  # AAA + BAC
    aaa = dict(dispatched("W1"), target_system="AAA")
    bac = dict(dispatched("W2", t=T0 + 5000), target_system="BAC")
    _, st, done, rej, _ = run([submitted(items=items), aaa, completed("W1", t=T0 + 3000), bac,
                               completed("W2", t=T0 + 9000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"] and st[-1]["updated_at"] == T0 + 9000
    assert len(done) == 1 and not rej


def test_uncatalogued_products_follow_the_literal_rule():
    # P1 is not in the catalog: COMPLETED once every dispatched work order succeeded
    _, st, _, rej, _ = run([submitted(), dispatched("W1"), completed("W1"), dispatched("W2", t=T0 + 9000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert len(rej) == 1 and "dispatched after order O1 COMPLETED" in rej[0].reason


def test_work_order_for_another_subscriber_is_rejected():
    _, st, _, rej, _ = run([submitted(), dict(dispatched("W1"), subscriber_id="S2"),
                            dict(dispatched("W2"), subscriber_id=SID)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS"] and len(rej) == 1 and "message key" in rej[0].reason


def test_order_with_items_waits_for_work_orders():
    _, st, done, _, _ = run([submitted()])
    assert seq(st) == ["SUBMITTED"] and done == []


def test_completion_before_dispatch_is_held_then_applied():
    book, st, done, rej, c = run([submitted(), completed("W1", t=T0 + 2000), dispatched("W1", t=T0 + 1000)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert [s["updated_at"] for s in st] == [T0, T0 + 1000, T0 + 2000]
    assert book["pending"] == [] and not rej and c["held_pending"] == 1 and c["applied_from_pending"] == 1


def test_everything_before_submit():
    book, st, done, rej, _ = run([completed("W1", t=T0 + 2000), dispatched("W2", t=T0 + 1100),
                                  dispatched("W1", t=T0 + 1000), completed("W2", t=T0 + 3000),
                                  submitted(t=T0)])
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert st[-1]["updated_at"] == T0 + 3000
    assert book["pending"] == [] and len(done) == 1 and not rej


def test_held_dispatches_apply_before_held_completions():
    # uncatalogued products: without dispatch-first draining, C1 would complete the order
    # before W2 is known
    evs = [completed("W2", t=T0 + 6000), dispatched("W1", t=T0 + 2000), completed("W1", t=T0 + 5000),
           dispatched("W2", t=T0 + 3000), submitted(t=T0)]
    _, st, done, rej, _ = run(evs)
    assert [(s["status"], s["updated_at"]) for s in st] == [("SUBMITTED", T0), ("IN_PROGRESS", T0 + 2000),
                                                             ("COMPLETED", T0 + 6000)]
    assert not rej and len(done) == 1


def test_out_of_order_same_result_as_in_order():
    in_order = [submitted(), dispatched("W1"), dispatched("W2"), completed("W1"), completed("W2", t=T0 + 3000)]
    shuffled = [in_order[i] for i in (4, 2, 3, 0, 1)]
    a = run(in_order)[1][-1]
    b = run(shuffled)[1][-1]
    assert a == b


def test_duplicate_event_id_is_noop():
    evs = [submitted(), dispatched("W1"), dispatched("W1"), completed("W1"), completed("W1"), submitted()]
    book, st, done, rej, c = run(evs)
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"] and len(done) == 1 and not rej
    assert c["duplicate_event"] == 3


def test_same_work_order_reported_twice_with_new_ids():
    evs = [submitted(), dispatched("W1"), dispatched("W2"), dispatched("W1", eid="retry-d"),
           completed("W1"), completed("W1", eid="retry-c")]
    _, st, _, rej, c = run(evs)
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS"] and not rej
    assert c["duplicate_dispatch"] == 1 and c["duplicate_result"] == 1


def test_conflicting_result_goes_to_dlq_first_wins():
    evs = [submitted(), dispatched("W1"), dispatched("W2"), completed("W1"), completed("W1", result="FAILED")]
    book, st, _, rej, _ = run(evs)
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS"]
    assert len(rej) == 1 and "conflicting result" in rej[0].reason
    assert book["orders"]["O1"]["work_orders"]["W1"]["result"] == "SUCCESS"


def test_repeated_order_id_goes_to_dlq():
    _, st, _, rej, _ = run([submitted(items=[]), submitted(items=[], eid="other")])
    assert seq(st) == ["SUBMITTED", "COMPLETED"] and "already submitted" in rej[0].reason


def test_unknown_order_is_held_then_dead_lettered():
    lim = Limits(pending_ttl_ms=DAY_MS)
    book, st, done, rej, c = run([completed("W1", oid="GHOST", t=T0)], limits=lim)
    assert st == [] and rej == [] and len(book["pending"]) == 1
    # a day of event time later (any event of the subscriber moves its clock)
    book, st, done, rej, c = run([submitted(oid="O2", items=[], t=T0 + DAY_MS + 1)], book=book, limits=lim)
    assert seq(st, "O2") == ["SUBMITTED", "COMPLETED"] and book["pending"] == []
    assert len(rej) == 1 and "unknown order GHOST" in rej[0].reason and rej[0].ref == {"id": "com-GHOST-W1-SUCCESS"}
    assert "GHOST" not in book["orders"] and c["pending_expired"] == 1


def test_unknown_work_order_of_open_order_is_held_then_dead_lettered():
    lim = Limits(pending_ttl_ms=1000)
    book, st, _, rej, _ = run([submitted(), dispatched("W1"), completed("WX", t=T0 + 1500),
                               completed("W1", result="SUCCESS", t=T0 + 5000)], limits=lim)
    # W1 succeeded and it is the only dispatched one: COMPLETED; WX then expires to DLQ
    assert seq(st) == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert len(rej) == 1 and "unknown work order WX of order O1" in rej[0].reason
    assert set(book["orders"]["O1"]["work_orders"]) == {"W1"}


def test_completion_for_unknown_work_order_of_completed_order_is_dlq():
    book, st, _, rej, _ = run([submitted(), dispatched("W1"), completed("W1"), completed("WZ")])
    assert seq(st)[-1] == "COMPLETED" and len(rej) == 1 and "already COMPLETED" in rej[0].reason
    assert set(book["orders"]["O1"]["work_orders"]) == {"W1"}


def test_pending_count_cap_evicts_oldest():
    lim = Limits(max_pending=2)
    book, _, _, rej, c = run([completed("W1", oid=f"G{i}", t=T0 + i) for i in range(4)], limits=lim)
    assert [p["order_id"] for p in book["pending"]] == ["G2", "G3"]
    assert [r.event["order_id"] for r in rej] == ["G0", "G1"] and c["pending_evicted"] == 2


def test_invalid_event_rejected_not_crashing():
    bad = [{"event_type": "WorkOrderCompleted", "event_id": "x", "event_time": T0, "order_id": "O1",
            "work_order_id": "W1", "result": "MAYBE"},
           {"event_type": "OrderSubmitted", "event_id": "y", "event_time": "yesterday"},
           submitted(sid="OTHER", eid="z")]
    book, st, _, rej, c = run(bad)
    assert st == [] and len(rej) == 3 and c["invalid"] == 3 and book["orders"] == {}


def test_bounded_seen_and_closed_order_retention():
    lim = Limits(max_seen=3, closed_retention_ms=DAY_MS, dedup_window_ms=DAY_MS)
    evs = [submitted(oid=f"O{i}", items=[], t=T0 + i) for i in range(5)]
    book, *_ = run(evs, limits=lim)
    assert len(book["seen"]) == 3 and len(book["orders"]) == 5
    book, *_ = run([submitted(oid="LATE", items=[], t=T0 + 2 * DAY_MS)], book=book, limits=lim)
    assert list(book["orders"]) == ["LATE"] and list(book["seen"]) == ["sub-LATE"]


def test_replay_is_deterministic():
    evs = [completed("W2", t=T0 + 3000), submitted(), dispatched("W1"), dispatched("W2"),
           completed("W1", result="FAILED"), completed("X", oid="GHOST"), submitted(oid="O2", items=[])]
    a = run(evs)
    b = run(json.loads(json.dumps(evs)))
    assert json.dumps(a[0], sort_keys=True) == json.dumps(b[0], sort_keys=True)
    assert a[1] == b[1]
