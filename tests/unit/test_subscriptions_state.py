"""SubscriptionState and the combined per-subscriber sync (pure, no broker)."""
import json

from processors.subscriptions import state, sync

T0 = 1_790_000_000_000
SID = "S1"


def created(t=T0, eid="c1", **kw):
    ev = {"event_type": "SubscriberCreated", "event_id": eid, "event_time": t, "source": "CRM-GD",
          "subscriber_id": SID, "msisdn": "13800000001", "account_id": "A1", "home_province": "GD",
          "payment_type": "PREPAID", "plan_id": "PLAN-A", "real_name": "x", "id_number": "y",
          "broadband_account": "gd-bb-1", "broadband_type": "E8_2", "access_ne_id": None}
    ev.update(kw)
    return ev


def plan(p, t, eid=None):
    return {"event_type": "PlanChanged", "event_id": eid or f"p-{p}-{t}", "event_time": t,
            "source": "CRM-GD", "subscriber_id": SID, "plan_id": p}


def status(s, t, eid=None):
    return {"event_type": "StatusChanged", "event_id": eid or f"s-{s}-{t}", "event_time": t,
            "source": "CRM-GD", "subscriber_id": SID, "status": s, "reason": None}


def recharge(t):
    return {"event_type": "BalanceRecharged", "event_id": f"r-{t}", "event_time": t, "source": "IBSS",
            "subscriber_id": SID, "amount_li": 50000, "channel": "APP"}


def order(oid, items, t, wos=()):
    """OrderSubmitted + for each work order id a dispatch and a SUCCESS completion."""
    evs = [{"event_type": "OrderSubmitted", "event_id": f"os-{oid}", "event_time": t, "source": "CRM-GD",
            "order_id": oid, "subscriber_id": SID, "channel": "APP",
            "items": [{"action": a, "product_id": p, "product_type": ty} for a, p, ty in items]}]
    for i, w in enumerate(wos):
        evs.append({"event_type": "WorkOrderDispatched", "event_id": f"wd-{oid}-{w}", "event_time": t + 1 + i,
                    "source": "IBSS", "order_id": oid, "work_order_id": w, "target_system": "ISMP"})
    for i, w in enumerate(wos):
        evs.append({"event_type": "WorkOrderCompleted", "event_id": f"wc-{oid}-{w}", "event_time": t + 100 + i,
                    "source": "ISMP", "order_id": oid, "work_order_id": w, "result": "SUCCESS", "error": None})
    return evs


def run(events, st=None):
    st = sync.new_state(SID) if st is None else st
    outs = sync.SyncResult()
    for e in events:
        r = sync.process(st, e, ref=e.get("event_id"))
        outs.order_statuses += r.order_statuses
        outs.subscription_states += r.subscription_states
        outs.views += r.views
        outs.rejects += r.rejects
        outs.merge_counters(r.counters)
        json.dumps(st)
    return st, outs


def test_created_publishes_version_1():
    st, o = run([created()])
    assert o.subscription_states == [{
        "event_type": "SubscriptionState", "subscriber_id": SID, "msisdn": "13800000001", "status": "ACTIVE",
        "plan_id": "PLAN-A", "payment_type": "PREPAID", "broadband_account": "gd-bb-1",
        "broadband_type": "E8_2", "products": [], "version": 1, "updated_at": T0}]


def test_versions_increment_by_one_and_only_on_change():
    evs = [created(), plan("PLAN-B", T0 + 10), recharge(T0 + 20), plan("PLAN-B", T0 + 30),
           status("SUSPENDED", T0 + 40)] + order("O1", [("ADD", "P2", "VAS"), ("ADD", "P1", "CONTENT")],
                                                  T0 + 50, wos=("W1", "W2"))
    st, o = run(evs)
    vs = [s["version"] for s in o.subscription_states]
    assert vs == [1, 2, 3, 4]
    last = o.subscription_states[-1]
    assert last["products"] == ["P1", "P2"] and last["plan_id"] == "PLAN-B" and last["status"] == "SUSPENDED"
    assert last["updated_at"] == T0 + 151  # the WorkOrderCompleted that completed the order
    assert o.counters["balance_ignored"] == 1
    assert o.views[-1]["product_types"] == {"P1": "CONTENT", "P2": "VAS"}


def test_failed_order_does_not_change_subscription():
    evs = [created()] + order("O1", [("ADD", "P1", "VAS")], T0 + 10, wos=("W1",))
    evs[-1] = dict(evs[-1], result="FAILED")
    st, o = run(evs)
    assert [s["version"] for s in o.subscription_states] == [1]
    assert o.order_statuses[-1]["status"] == "FAILED"


def test_remove_absent_product_is_counted_noop():
    evs = [created()] + order("O1", [("ADD", "P1", "VAS")], T0 + 10, wos=("W1",)) \
        + order("O2", [("REMOVE", "NOPE", "VAS")], T0 + 20, wos=("W2",))
    st, o = run(evs)
    assert [s["version"] for s in o.subscription_states] == [1, 2]
    assert o.order_statuses[-1]["status"] == "COMPLETED"
    assert o.counters["remove_absent"] == 1 and not o.rejects
    assert sorted(st["sub"]["products"]) == ["P1"]


def test_remove_present_and_add_present():
    evs = [created()] + order("O1", [("ADD", "P1", "VAS")], T0 + 10, wos=("W1",)) \
        + order("O2", [("ADD", "P1", "VAS")], T0 + 20, wos=("W2",)) \
        + order("O3", [("REMOVE", "P1", "VAS")], T0 + 30, wos=("W3",))
    st, o = run(evs)
    assert [(s["version"], s["products"]) for s in o.subscription_states] == [(1, []), (2, ["P1"]), (3, [])]
    assert o.counters["add_present"] == 1 and st["sub"]["products"] == {}


def test_no_work_order_order_changes_subscription_on_submit():
    st, o = run([created()] + order("O1", [], T0 + 5))
    assert [s["status"] for s in o.order_statuses] == ["SUBMITTED", "COMPLETED"]
    assert [s["version"] for s in o.subscription_states] == [1]  # nothing to add: no new version


def test_changes_before_created_appear_in_version_1():
    evs = order("O1", [("ADD", "P1", "VAS")], T0 + 10, wos=("W1",)) + [status("SUSPENDED", T0 + 5), created()]
    st, o = run(evs)
    assert len(o.subscription_states) == 1
    s = o.subscription_states[0]
    assert s["version"] == 1 and s["products"] == ["P1"] and s["status"] == "SUSPENDED"


def test_stale_events_do_not_overwrite_newer_values():
    st, o = run([created(), plan("PLAN-C", T0 + 100), plan("PLAN-B", T0 + 50)])
    assert [s["plan_id"] for s in o.subscription_states] == ["PLAN-A", "PLAN-C"]
    assert o.counters["stale_event"] == 1


def test_updated_at_never_goes_backwards():
    evs = [created(t=T0 + 1000)] + order("O1", [("ADD", "P1", "VAS")], T0, wos=("W1",))
    st, o = run(evs)
    assert [s["updated_at"] for s in o.subscription_states] == [T0 + 1000, T0 + 1000]


def test_duplicate_subscriber_event_is_noop():
    st, o = run([created(), status("SUSPENDED", T0 + 1, eid="dup"), status("ACTIVE", T0 + 2, eid="dup")])
    assert [s["status"] for s in o.subscription_states] == ["ACTIVE", "SUSPENDED"]
    assert o.counters["duplicate_event"] == 1


def test_bad_subscriber_event_rejected():
    st, o = run([created(payment_type="BARTER"), dict(created(eid="c2"), subscriber_id="S2"),
                 {"event_type": "Nonsense", "event_id": "n", "event_time": T0}])
    assert len(o.rejects) == 3 and o.subscription_states == [] and st["sub"]["created"] is False


def test_replay_rebuilds_identical_states_and_versions():
    evs = ([status("SUSPENDED", T0 - 5)] + order("O1", [("ADD", "P1", "VAS")], T0 + 10, wos=("W1", "W2"))
           + [created(), plan("PLAN-B", T0 + 300), recharge(T0 + 301)]
           + order("O2", [("REMOVE", "P1", "VAS"), ("ADD", "P9", "BROADBAND")], T0 + 400, wos=("W3",))
           + order("O3", [("REMOVE", "ZZ", "VAS")], T0 + 500))
    st1, o1 = run(evs)
    st2, o2 = run(json.loads(json.dumps(evs)))
    assert o1.subscription_states == o2.subscription_states
    assert o1.order_statuses == o2.order_statuses
    assert json.dumps(st1, sort_keys=True) == json.dumps(st2, sort_keys=True)
    vs = [s["version"] for s in o1.subscription_states]
    assert vs == list(range(1, len(vs) + 1))
    # state survives a JSON round trip (changelog) mid-stream with identical results
    half = len(evs) // 2
    st3, o3a = run(evs[:half])
    st3 = json.loads(json.dumps(st3))
    st3, o3b = run(evs[half:], st=st3)
    assert o3a.subscription_states + o3b.subscription_states == o1.subscription_states
