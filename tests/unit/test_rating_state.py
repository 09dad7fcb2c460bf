"""Pure rating rules over subscriber state: plan history and versions, rejections,
duplicates, balances and credit control, determinism and bounded state."""

from __future__ import annotations

import json

import pytest

from processors.rating import rules
from processors.rating.rules import (
    apply_subscriber_event,
    catalog_add,
    order_key,
    rate_cdr,
    select_plan_version,
    validate_subscriber_event,
)

try:  # shared builders (pytest's default import mode puts tests/unit on sys.path)
    from test_rating_rules import HOUR, T0, catalog_of, created, data, ms, plan, run, sms, subscriber, voice
except ImportError:  # package-style layout
    from tests.unit.test_rating_rules import HOUR, T0, catalog_of, created, data, ms, plan, run, sms, subscriber, voice


def ev(event_type, t, sub="S1", event_id=None, **fields):
    e = {"event_type": event_type, "event_id": event_id or f"{event_type}-{sub}-{t}", "event_time": t,
         "source": "CRM-GD", "subscriber_id": sub}
    e.update(fields)
    assert validate_subscriber_event(e) is None, e
    return e


def plan_changed(t, plan_id, sub="S1"):
    return ev("PlanChanged", t, sub, plan_id=plan_id)


def status(t, s, sub="S1"):
    return ev("StatusChanged", t, sub, status=s, reason=None)


def recharge(t, amount, sub="S1", event_id=None):
    return ev("BalanceRecharged", t, sub, event_id=event_id, amount_li=amount, channel="APP")


def apply(cat, st, *events):
    outs = []
    for e in events:
        st, out = apply_subscriber_event(st, e, cat)
        outs.extend(out)
    return st, outs


# ------------------------------------------------------------ plan versions

def test_select_highest_version_effective_at_start_time():
    noon = ms("2026-11-10T12:00:00+08:00")
    cat = catalog_of(plan(version=1, dom=100, inc=60), plan(version=2, effective_from=noon, dom=200, inc=60))
    st = subscriber(cat)
    st, rs = run(cat, st, voice(60, start=noon - 1), voice(60, start=noon), voice(60, start=noon + HOUR))
    assert [(r["plan_version"], r["amount_li"]) for r in rs] == [(1, 100), (2, 200), (2, 200)]


def test_selection_is_by_version_not_by_effective_from():
    nov1 = ms("2026-11-01T00:00:00+08:00")
    nov5 = ms("2026-11-05T00:00:00+08:00")
    cat = catalog_of(plan(version=1), plan(version=2, effective_from=nov5, dom=200),
                     plan(version=3, effective_from=nov1, dom=300))
    assert select_plan_version(cat, "P1", nov1 - 1)["version"] == 1
    assert select_plan_version(cat, "P1", nov1)["version"] == 3
    assert select_plan_version(cat, "P1", nov5 + 1)["version"] == 3  # v3 > v2, both effective
    assert select_plan_version(cat, "P1", ms("2025-12-31T00:00:00+08:00")) is None
    assert select_plan_version(cat, "NOPE", nov5) is None
    assert select_plan_version(cat, None, nov5) is None


def test_republished_version_replaces_and_arrival_order_does_not_matter():
    a = catalog_of(plan(version=2, dom=200), plan(version=1, dom=100))
    b = catalog_of(plan(version=1, dom=100), plan(version=2, dom=200))
    assert a == b and [v["version"] for v in a["P1"]] == [1, 2]
    assert catalog_add(a, plan(version=2, dom=300)) is None
    assert [v["voice"]["domestic_li_per_min"] for v in a["P1"]] == [100, 300]
    assert all("event_type" not in v for v in a["P1"])


def test_invalid_plan_version_is_never_applied():
    cat = catalog_of(plan(version=1, dom=100, inc=60))
    assert catalog_add(cat, plan(version=2, dom=15, inc=6)) is not None
    r = run(cat, subscriber(cat), voice(60))[1][0]
    assert (r["plan_version"], r["amount_li"]) == (1, 100)


# ------------------------------------------------------------- plan history

def test_plan_in_effect_at_start_time_and_late_cdr_before_plan_change():
    cat = catalog_of(plan("A", inc=60, dom=100), plan("B", inc=60, dom=300))
    st = subscriber(cat, plan_id="A")
    st, _ = apply(cat, st, plan_changed(T0 + 2 * HOUR, "B"))
    st, rs = run(cat, st,
                 voice(60, start=T0 + 3 * HOUR),
                 voice(60, start=T0 + HOUR, event_time=T0 + 4 * HOUR),   # late, from before the change
                 voice(60, start=T0 + 2 * HOUR))                         # at the change: new plan
    assert [(r["plan_id"], r["amount_li"]) for r in rs] == [("B", 300), ("A", 100), ("B", 300)]


def test_plan_history_out_of_order_events_are_sorted_by_event_time():
    cat = catalog_of(plan("A"), plan("B"), plan("C"))
    st = subscriber(cat, plan_id="A")
    st, _ = apply(cat, st, plan_changed(T0 + 2 * HOUR, "C"), plan_changed(T0 + HOUR, "B"))
    assert rules.plan_at(st, T0) == "A"
    assert rules.plan_at(st, T0 + HOUR) == "B"
    assert rules.plan_at(st, T0 + 2 * HOUR) == "C"
    # ties: the later-applied event wins
    st, _ = apply(cat, st, ev("PlanChanged", T0 + 2 * HOUR, event_id="x2", plan_id="A"))
    assert rules.plan_at(st, T0 + 2 * HOUR) == "A"


def test_repeated_subscriber_created_is_idempotent():
    cat = catalog_of(plan())
    st = subscriber(cat)
    st2, _ = apply(cat, st, created())
    assert st2 == st


# --------------------------------------------------------------- rejections

def test_unknown_subscriber():
    cat = catalog_of(plan())
    st, [r] = rate_cdr(None, voice(60, sub="S9"), cat)
    assert st is None
    assert (r["status"], r["reject_reason"], r["amount_li"], r["billed_units"], r["free_units"]) == (
        "REJECTED", "UNKNOWN_SUBSCRIBER", 0, 0, 0)
    assert (r["plan_id"], r["plan_version"], r["balance_after_li"]) == (None, None, 0)
    assert r["billing_period"] == "202611" and r["rated_at"] == T0


def test_subscriber_known_only_from_recharge_is_still_unknown():
    cat = catalog_of(plan())
    st, _ = apply(cat, None, recharge(T0 - HOUR, 500))
    st2, [r] = rate_cdr(st, voice(60), cat)
    assert (r["reject_reason"], r["balance_after_li"]) == ("UNKNOWN_SUBSCRIBER", 500)
    assert st2 == st


def test_terminated_at_start_time():
    cat = catalog_of(plan(inc=60, dom=100, free_min=5))
    st = subscriber(cat)
    st, _ = apply(cat, st, status(T0, "TERMINATED"))
    st, rs = run(cat, st, voice(60, start=T0), voice(60, start=T0 - 1))
    r = rs[0]
    assert (r["status"], r["reject_reason"], r["amount_li"], r["billed_units"], r["free_units"]) == (
        "REJECTED", "SUBSCRIBER_TERMINATED", 0, 0, 0)
    assert (r["plan_id"], r["plan_version"]) == ("P1", 1)
    # usage from before the termination, arriving late, is rated
    assert (rs[1]["status"], rs[1]["free_units"]) == ("RATED", 60)
    # nothing consumed by the rejected CDR
    assert st["periods"]["202611"]["voice_s"] == 60
    # re-activation
    st, _ = apply(cat, st, status(T0 + HOUR, "ACTIVE"))
    st, [r] = run(cat, st, voice(60, start=T0 + HOUR))
    assert r["status"] == "RATED"


def test_administratively_suspended_is_still_rated():
    cat = catalog_of(plan(inc=60, dom=100))
    st = subscriber(cat)
    st, _ = apply(cat, st, status(T0 - HOUR, "SUSPENDED"))
    assert run(cat, st, voice(60))[1][0]["status"] == "RATED"


def test_no_plan_before_subscription_and_without_effective_version():
    cat = catalog_of(plan("P1"), plan("LATER", effective_from=T0 + HOUR))
    st, _ = apply(cat, None, created(plan_id="P1", t=T0))
    st, [r] = run(cat, st, voice(60, start=T0 - 1))  # before the subscription started
    assert (r["status"], r["reject_reason"], r["plan_id"], r["plan_version"]) == ("REJECTED", "NO_PLAN", None, None)
    st, _ = apply(cat, st, plan_changed(T0 + 10, "LATER"))
    st, [r] = run(cat, st, voice(60, start=T0 + 20))  # LATER has no version yet
    assert (r["reject_reason"], r["amount_li"]) == ("NO_PLAN", 0)
    st, _ = apply(cat, st, plan_changed(T0 + 30, "MISSING"))
    st, [r] = run(cat, st, voice(60, start=T0 + 40))  # plan_id not in the catalog
    assert r["reject_reason"] == "NO_PLAN"
    assert st["balance_li"] == 0 and st["seen_cdrs"] == {}


def test_rejected_cdrs_do_not_enter_duplicate_window():
    cat = catalog_of(plan(inc=60, dom=100, credit_limit_li=1000))
    c = voice(60, start=T0)
    _, [r1] = rate_cdr(None, c, cat)
    st = subscriber(cat)
    st, [r2] = rate_cdr(st, c, cat)  # re-submitted after the subscriber exists: charged once
    st, [r3] = rate_cdr(st, c, cat)
    assert [r["status"] for r in (r1, r2, r3)] == ["REJECTED", "RATED", "DUPLICATE"]
    assert st["balance_li"] == -100


# --------------------------------------------------------------- duplicates

@pytest.mark.parametrize("gap_h,expected", [(0, "DUPLICATE"), (71, "DUPLICATE"), (72, "DUPLICATE"), (73, "RATED")])
def test_duplicate_window_72h_of_event_time(gap_h, expected):
    cat = catalog_of(plan(inc=60, dom=100, free_min=0))
    st = subscriber(cat)
    first = voice(60, start=T0, cdr_id="C1")
    again = voice(60, start=T0, cdr_id="C1", event_time=T0 + gap_h * HOUR)
    st, [r1, r2] = run(cat, st, first, again)
    assert r1["status"] == "RATED"
    assert r2["status"] == expected
    if expected == "DUPLICATE":
        assert (r2["amount_li"], r2["billed_units"], r2["free_units"], r2["reject_reason"]) == (0, 0, 0, None)
        assert r2["balance_after_li"] == -100 == st["balance_li"]
    else:
        assert st["balance_li"] == -200


def test_duplicate_consumes_no_allowance():
    cat = catalog_of(plan(inc=60, dom=100, free_min=1, free_sms=1))
    st = subscriber(cat)
    st, rs = run(cat, st, sms(cdr_id="M1"), sms(cdr_id="M1"), voice(30, cdr_id="V1"), voice(30, cdr_id="V1"))
    assert [r["status"] for r in rs] == ["RATED", "DUPLICATE", "RATED", "DUPLICATE"]
    assert st["periods"]["202611"] == {"voice_s": 60, "sms": 1, "kb": 0}


def test_duplicate_window_is_pruned_by_event_time():
    cat = catalog_of(plan(inc=60))
    st = subscriber(cat)
    st, _ = run(cat, st, voice(1, cdr_id="OLD", start=T0))
    st, _ = run(cat, st, voice(1, cdr_id="NEW", start=T0 + 73 * HOUR))
    assert set(st["seen_cdrs"]) == {"NEW"}


# ------------------------------------------------------- balance and credit

def test_suspend_once_and_resume_once():
    cat = catalog_of(plan(inc=60, dom=3000, credit_limit_li=5000))  # 1 min = 3000 li, threshold -5000
    st = subscriber(cat)
    outs = []

    def cdr_(c):
        nonlocal st
        st, out = rate_cdr(st, c, cat)
        outs.append(out)
        for o in out[1:]:
            assert o["cause_event_id"] == c["event_id"]
        return out

    def rch(t, amount, eid):
        nonlocal st
        st, out = apply_subscriber_event(st, recharge(t, amount, event_id=eid), cat)
        outs.append(out)
        return out

    a = cdr_(voice(60, start=T0))                 # -3000
    b = cdr_(voice(60, start=T0 + 1000))          # -6000 < -5000: SUSPEND
    c = cdr_(voice(60, start=T0 + 2000))          # -9000: no second SUSPEND
    d = rch(T0 + 3000, 2000, "R1")                # -7000: still below, no RESUME
    e = rch(T0 + 4000, 2000, "R2")                # -5000 >= -5000: RESUME
    f = rch(T0 + 5000, 1000, "R3")                # -4000: no second RESUME
    g = cdr_(voice(60, start=T0 + 6000))          # -7000: SUSPEND again (new crossing)
    assert len(a) == 1 and a[0]["balance_after_li"] == -3000
    assert b[1] == {"event_type": "CreditControl", "subscriber_id": "S1", "action": "SUSPEND",
                    "balance_li": -6000, "threshold_li": -5000, "cause_event_id": b[1]["cause_event_id"]}
    assert b[0]["balance_after_li"] == -6000
    assert len(c) == 1 and c[0]["balance_after_li"] == -9000
    assert d == []
    assert e == [{"event_type": "CreditControl", "subscriber_id": "S1", "action": "RESUME",
                  "balance_li": -5000, "threshold_li": -5000, "cause_event_id": "R2"}]
    assert f == []
    assert [o["action"] for o in g[1:]] == ["SUSPEND"] and g[1]["balance_li"] == -7000
    assert sum(1 for out in outs for o in out if o["event_type"] == "CreditControl") == 3


def test_suspend_cause_is_the_cdr_event_id():
    cat = catalog_of(plan(inc=60, dom=100, credit_limit_li=0))
    st = subscriber(cat)
    c = voice(60)
    st, out = rate_cdr(st, c, cat)
    assert out[1]["cause_event_id"] == c["event_id"] and out[1]["threshold_li"] == 0
    assert st["suspended"] is True


def test_exactly_at_threshold_is_not_below():
    cat = catalog_of(plan(inc=60, dom=100, credit_limit_li=100))
    st = subscriber(cat)
    st, out = rate_cdr(st, voice(60), cat)
    assert len(out) == 1 and st["balance_li"] == -100 and not st["suspended"]


def test_prepaid_with_balance_recharge_first():
    cat = catalog_of(plan(inc=60, dom=100))
    st = subscriber(cat)
    st, out = apply(cat, st, recharge(T0 - HOUR, 150))
    assert out == []
    st, rs = run(cat, st, voice(60), voice(60))
    assert [r["balance_after_li"] for r in rs] == [50, -50]
    assert st["suspended"]


def test_zero_amount_cdr_never_suspends():
    cat = catalog_of(plan("A", inc=60, dom=100, credit_limit_li=0), plan("B", inc=60, dom=100, credit_limit_li=500))
    st = subscriber(cat, plan_id="B")
    st, rs = run(cat, st, voice(180, start=T0))  # -300, threshold -500: fine
    st, _ = apply(cat, st, plan_changed(T0 + HOUR, "A"))  # threshold now 0: balance below, no event by itself
    st, out = rate_cdr(st, voice(0, start=T0 + 2 * HOUR), cat)
    assert len(out) == 1 and not st["suspended"]
    st, out = rate_cdr(st, sms(direction="MT", start=T0 + 2 * HOUR), cat)
    assert len(out) == 1
    st, out = rate_cdr(st, voice(1, start=T0 + 2 * HOUR), cat)
    assert out[1]["action"] == "SUSPEND" and out[1]["threshold_li"] == 0


def test_postpaid_uses_same_balance_mechanics():
    cat = catalog_of(plan("PP", payment_type="POSTPAID", inc=60, dom=1000, credit_limit_li=1500))
    st, _ = apply(cat, None, created(plan_id="PP", payment_type="POSTPAID"))
    st, rs = run(cat, st, voice(60), voice(60))
    assert [r["balance_after_li"] for r in rs] == [-1000, -2000]
    st, out = rate_cdr(st, voice(1), cat)
    assert out[1:] == []  # already suspended by the second call
    st, out = apply(cat, st, recharge(T0 + HOUR, 2000))  # payment: -1000 >= -1500
    assert [o["action"] for o in out] == ["RESUME"] and out[0]["balance_li"] == -1000


def test_retried_recharge_is_credited_once():
    cat = catalog_of(plan())
    st = subscriber(cat)
    st, _ = apply(cat, st, recharge(T0, 1000, event_id="R1"), recharge(T0, 1000, event_id="R1"),
                  recharge(T0 + 1, 1000, event_id="R2"))
    assert st["balance_li"] == 2000


def test_recharge_resume_threshold_uses_plan_in_effect_at_recharge():
    cat = catalog_of(plan("A", inc=60, dom=1000, credit_limit_li=0), plan("B", credit_limit_li=2000))
    st = subscriber(cat, plan_id="A")
    st, out = rate_cdr(st, voice(60, start=T0), cat)  # -1000 < 0: SUSPEND
    assert out[1]["action"] == "SUSPEND"
    st, _ = apply(cat, st, plan_changed(T0 + HOUR, "B"))  # threshold -2000, but no RESUME without recharge
    st, out = apply(cat, st, recharge(T0 + 2 * HOUR, 1))
    assert out[0]["action"] == "RESUME" and out[0]["threshold_li"] == -2000 and out[0]["balance_li"] == -999


# ------------------------------------------------------------ RatedCdr shape

def test_rated_cdr_has_exactly_the_schema_fields():
    fields = [f["name"] for f in json.load(open("schemas/RatedCdr.avsc"))["fields"]]
    cat = catalog_of(plan(inc=60, dom=100))
    r = run(cat, subscriber(cat), data(1, 1))[1][0]
    assert r["event_type"] == "RatedCdr"
    assert sorted(k for k in r if k != "event_type") == sorted(fields)
    assert r["rated_at"] == T0
    cc_fields = [f["name"] for f in json.load(open("schemas/CreditControl.avsc"))["fields"]]
    st = subscriber(cat)
    _, out = rate_cdr(st, voice(60), cat)
    assert sorted(k for k in out[1] if k != "event_type") == sorted(cc_fields)


# ------------------------------------------- determinism, serialisation, bounds

def _scenario():
    cat = catalog_of(plan("A", inc=6, dom=100, free_min=1, free_sms=1, free_mb=1, credit_limit_li=100),
                     plan("A", version=2, effective_from=T0 + HOUR, inc=60, dom=200, free_min=2),
                     plan("B", inc=60, dom=50, intl=600))
    events = [
        created(plan_id="A"),
        recharge(T0 - HOUR, 500),
        voice(50, start=T0), voice(20, start=T0 + 10), sms(start=T0 + 20), sms(start=T0 + 30),
        data(600 * 1024, 600 * 1024, start=T0 + 40),
        voice(61, start=T0 + HOUR), voice(61, called="0044123", start=T0 + HOUR + 1),
        plan_changed(T0 + 2 * HOUR, "B"),
        voice(600, start=T0 + 3 * HOUR), recharge(T0 + 4 * HOUR, 10_000),
        voice(10, start=T0 + 90 * 60_000, event_time=T0 + 5 * HOUR),
        voice(10, start=T0 + 90 * 60_000, event_time=T0 + 5 * HOUR, cdr_id="dup"),
        voice(10, start=T0 + 90 * 60_000, event_time=T0 + 6 * HOUR, cdr_id="dup"),
    ]
    return cat, events


def _replay(cat, events, roundtrip=False):
    st, outs = None, []
    for e in events:
        if e["event_type"] == "Cdr":
            st, out = rate_cdr(st, e, cat)
        else:
            st, out = apply_subscriber_event(st, e, cat)
        outs.extend(out)
        if roundtrip and st is not None:
            st = json.loads(json.dumps(st))
    return st, outs


def test_replay_is_deterministic_and_state_survives_json():
    cat, events = _scenario()
    st1, out1 = _replay(cat, events)
    st2, out2 = _replay(json.loads(json.dumps(cat)), events, roundtrip=True)
    assert json.dumps(out1, sort_keys=True) == json.dumps(out2, sort_keys=True)
    assert st1 == st2
    assert [o.get("status") or o["action"] for o in out1] == [
        "RATED", "RATED", "RATED", "RATED", "RATED", "RATED", "SUSPEND", "RATED", "RATED", "RESUME",
        "RATED", "RATED", "DUPLICATE"]


def test_scenario_values_by_hand():
    cat, events = _scenario()
    st, outs = _replay(cat, events)
    rated = [o for o in outs if o["event_type"] == "RatedCdr"]
    got = [(r["plan_id"], r["plan_version"], r["billed_units"], r["free_units"], r["amount_li"], r["balance_after_li"])
           for r in rated]
    assert got == [
        ("A", 1, 54, 54, 0, 500),         # 50 s -> 9 x 6 s, all free (6 s of free left)
        ("A", 1, 24, 6, 30, 470),         # 20 s -> 24 s, 6 free, 18 s * 100/60 = 30
        ("A", 1, 1, 1, 0, 470),           # the one free SMS
        ("A", 1, 1, 0, 100, 370),         # sms_dom 100
        ("A", 1, 1200, 1024, 172, 198),   # 1 228 800 B = 1200 KB, 1024 free, ceil(176*1000/1024) = 172
        ("A", 2, 120, 60, 200, -2),       # v2: 2 free min - 60 s used = 60 s free; 60 s * 200/60
        ("A", 2, 120, 0, 2000, -2002),    # international: 120 s * 1000/60, no free
        ("B", 1, 600, 0, 500, -2502),     # 10 min at 50 li/min
        ("A", 2, 60, 0, 200, 7298),       # recharge 10000; late CDR from before the change: A v2, free used up
        ("A", 2, 60, 0, 200, 7098),
        ("A", 2, 0, 0, 0, 7098),          # duplicate: nothing billed or consumed
    ]
    cc = [o for o in outs if o["event_type"] == "CreditControl"]
    # v2 credit limit 0: -2 < 0 suspends (cause = that CDR); recharge at T0+4h under B (limit 0) resumes
    assert [(o["action"], o["balance_li"], o["threshold_li"]) for o in cc] == [("SUSPEND", -2, 0), ("RESUME", 7498, 0)]
    assert cc[0]["cause_event_id"] == events[7]["event_id"]
    assert cc[1]["cause_event_id"] == events[11]["event_id"]
    assert st["balance_li"] == 7098 and st["suspended"] is False


def test_state_is_bounded():
    cat = catalog_of(plan(inc=60))
    st = subscriber(cat)
    day = 24 * HOUR
    for i in range(200):
        t = T0 + i * day
        st, _ = apply(cat, st, plan_changed(t, "P1"), status(t, "ACTIVE"), recharge(t, 1, event_id=f"r{i}"))
        st, _ = run(cat, st, voice(1, start=t, cdr_id=f"c{i}"))
    assert len(st["seen_cdrs"]) <= 4 and len(st["seen_events"]) <= 4
    assert len(st["plans"]) <= 102 and len(st["statuses"]) <= 102
    assert len(st["periods"]) <= rules.PERIODS_KEPT
    assert rules.plan_at(st, st["watermark"]) == "P1"


def test_order_key_ties():
    p = plan(effective_from=T0)
    p["event_time"] = T0
    s = recharge(T0, 1)
    c = voice(1, start=T0)
    items = sorted([(c, 0), (s, 5), (p, 9), (s, 1)], key=lambda x: order_key(x[0], x[1]))
    assert [(x[0]["event_type"], x[1]) for x in items] == [
        ("TariffPlan", 9), ("BalanceRecharged", 1), ("BalanceRecharged", 5), ("Cdr", 0)]


def test_invalid_subscriber_events():
    assert "amount_li" in validate_subscriber_event({"event_type": "BalanceRecharged", "event_id": "e",
                                                     "event_time": 1, "subscriber_id": "S", "amount_li": 0})
    assert "status" in validate_subscriber_event({"event_type": "StatusChanged", "event_id": "e",
                                                  "event_time": 1, "subscriber_id": "S", "status": "GONE"})
    assert "unexpected" in validate_subscriber_event({"event_type": "Cdr"})
    assert "plan_id" in validate_subscriber_event({"event_type": "PlanChanged", "event_id": "e",
                                                   "event_time": 1, "subscriber_id": "S"})
