"""Pure rating rules: rounding, zones, allowances, billing periods, validation.

Every expected value is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import copy
from datetime import datetime

import pytest

from processors.rating import rules
from processors.rating.rules import (
    apply_subscriber_event,
    billing_period,
    catalog_add,
    rate_cdr,
    validate_cdr,
    validate_plan,
    zone_of,
)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


T0 = ms("2026-11-10T10:00:00+08:00")
MIN = 60_000
HOUR = 3_600_000


def plan(plan_id="P1", version=1, effective_from=ms("2026-01-01T00:00:00+08:00"), *,
         payment_type="PREPAID", credit_limit_li=0, dom=100, intl=1000, inc=6, free_min=0,
         sms_dom=100, sms_intl=500, free_sms=0, li_per_mb=1000, free_mb=0):
    return {
        "event_type": "TariffPlan", "event_id": f"tp-{plan_id}-{version}", "event_time": effective_from,
        "source": "IBSS", "plan_id": plan_id, "version": version, "effective_from": effective_from,
        "payment_type": payment_type, "credit_limit_li": credit_limit_li,
        "voice": {"domestic_li_per_min": dom, "international_li_per_min": intl, "increment_s": inc,
                  "free_domestic_min": free_min},
        "sms": {"domestic_li": sms_dom, "international_li": sms_intl, "free_domestic_sms": free_sms},
        "data": {"li_per_mb": li_per_mb, "free_mb": free_mb},
    }


def catalog_of(*plans):
    cat: dict = {}
    for p in plans:
        assert catalog_add(cat, p) is None
    return cat


def created(sub="S1", plan_id="P1", t=ms("2026-01-01T00:00:00+08:00"), payment_type="PREPAID"):
    return {"event_type": "SubscriberCreated", "event_id": f"sc-{sub}-{t}", "event_time": t, "source": "CRM-GD",
            "subscriber_id": sub, "msisdn": "18900000001", "account_id": "A1", "home_province": "GD",
            "payment_type": payment_type, "plan_id": plan_id, "real_name": "x", "id_number": "y",
            "broadband_type": "NONE"}


_seq = [0]


def cdr(service="VOICE", *, direction="MO", called="13800000000", start=T0, duration=None, up=None,
        down=None, sub="S1", cdr_id=None, event_time=None):
    _seq[0] += 1
    n = _seq[0]
    c = {"event_type": "Cdr", "event_id": f"ev-{n}", "event_time": start if event_time is None else event_time,
         "source": "MEDIATION", "cdr_id": cdr_id or f"cdr-{n}", "subscriber_id": sub, "service": service,
         "direction": direction, "calling_number": "18900000001", "called_number": called,
         "start_time": start, "duration_s": duration, "bytes_up": up, "bytes_down": down,
         "cell_id": None, "province": "GD"}
    return c


def voice(duration, **kw):
    return cdr("VOICE", duration=duration, **kw)


def sms(**kw):
    return cdr("SMS", **kw)


def data(up, down, **kw):
    kw.setdefault("called", None)
    return cdr("DATA", up=up, down=down, **kw)


def subscriber(cat, sub="S1", plan_id="P1"):
    st, out = apply_subscriber_event(None, created(sub, plan_id), cat)
    assert out == []
    return st


def run(cat, state, *cdrs):
    """Rate CDRs in order; return the final state and the RatedCdr outputs."""
    rated = []
    for c in cdrs:
        assert validate_cdr(c) is None
        state, out = rate_cdr(state, c, cat)
        rated.append(out[0])
    return state, rated


def one(cat, c, state=None):
    state = state or subscriber(cat)
    _, [r] = run(cat, state, c)
    return r


# ------------------------------------------------------------------------- zones

@pytest.mark.parametrize("called,zone", [
    ("13800000000", "DOMESTIC"),
    ("0086138000000", "DOMESTIC"),      # 0086 = China: domestic
    ("00861", "DOMESTIC"),
    ("0044207946000", "INTERNATIONAL"),
    ("00881123456", "INTERNATIONAL"),
    ("0085212345678", "INTERNATIONAL"),  # 00852 (HK) is not 0086
    ("008", "INTERNATIONAL"),
    ("00", "INTERNATIONAL"),
    ("0", "DOMESTIC"),
    ("02012345678", "DOMESTIC"),
    ("+441234", "DOMESTIC"),             # only the 00 prefix counts
    (None, "DOMESTIC"),
    ("", "DOMESTIC"),
])
def test_zone(called, zone):
    assert zone_of(called) == zone


# --------------------------------------------------------------- billing period

@pytest.mark.parametrize("iso,period", [
    ("2026-11-30T15:59:59.999+00:00", "202611"),  # 23:59:59.999 in Shanghai
    ("2026-11-30T16:00:00+00:00", "202612"),      # 00:00 Dec 1 in Shanghai
    ("2026-12-31T16:00:00+00:00", "202701"),      # new year in Shanghai, still 2026 in UTC
    ("2026-12-31T15:59:59.999+00:00", "202612"),
    ("2026-02-28T16:00:00+00:00", "202603"),
    ("2026-06-15T00:00:00+08:00", "202606"),
    ("1970-01-01T00:00:00+00:00", "197001"),
    ("1969-12-31T16:00:00+00:00", "197001"),
    ("1969-12-31T15:59:59.999+00:00", "196912"),
])
def test_billing_period_asia_shanghai(iso, period):
    assert billing_period(ms(iso)) == period


# ----------------------------------------------------------- plan validation

def test_valid_plan():
    assert validate_plan(plan()) is None
    assert validate_plan(plan(dom=150, intl=1000, inc=60)) is None  # any rate works with 60 s


@pytest.mark.parametrize("kw,needle", [
    ({"dom": 15, "inc": 6}, "domestic_li_per_min=15"),      # 15*6 = 90, not a multiple of 60
    ({"intl": 1001, "inc": 6}, "international_li_per_min=1001"),
    ({"inc": 30}, "increment_s must be 6 or 60"),
    ({"inc": 1}, "increment_s must be 6 or 60"),
    ({"dom": -10}, "domestic_li_per_min must be an integer >= 0"),
    ({"credit_limit_li": -1}, "credit_limit_li"),
    ({"free_min": -1}, "free_domestic_min"),
    ({"sms_dom": -1}, "sms.domestic_li"),
    ({"free_sms": -1}, "sms.free_domestic_sms"),
    ({"li_per_mb": -1}, "data.li_per_mb"),
    ({"free_mb": -2}, "data.free_mb"),
    ({"payment_type": "CASH"}, "payment_type"),
])
def test_invalid_plans_have_a_clear_reason(kw, needle):
    reason = validate_plan(plan(**kw))
    assert reason is not None and needle in reason


def test_divisibility_rule_examples():
    assert validate_plan(plan(dom=10, inc=6)) is None      # 60
    assert validate_plan(plan(dom=20, inc=6)) is None      # 120
    assert validate_plan(plan(dom=25, inc=6)) is not None  # 150
    assert validate_plan(plan(dom=0, intl=0, inc=6)) is None


def test_plan_structure_errors():
    p = plan()
    del p["voice"]
    assert "voice" in validate_plan(p)
    p = plan()
    p["version"] = "1"
    assert "version" in validate_plan(p)
    p = plan()
    p["voice"]["domestic_li_per_min"] = 1.5
    assert "domestic_li_per_min" in validate_plan(p)
    p = plan(plan_id="")
    assert "plan_id" in validate_plan(p)


def test_catalog_add_rejects_invalid_plan_and_keeps_catalog():
    cat = catalog_of(plan(dom=100))
    before = copy.deepcopy(cat)
    assert catalog_add(cat, plan(version=2, dom=15)) is not None
    assert cat == before


# ----------------------------------------------------------- CDR validation

@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c.update(duration_s=-1), "negative duration_s"),
    (lambda c: c.update(duration_s=None), "VOICE CDR without duration_s"),
    (lambda c: c.update(service="FAX"), "unknown service"),
    (lambda c: c.update(direction="XX"), "unknown direction"),
    (lambda c: c.update(called_number=None), "without called_number"),
    (lambda c: c.update(cdr_id=""), "cdr_id"),
    (lambda c: c.update(subscriber_id=None), "subscriber_id"),
    (lambda c: c.update(start_time="yesterday"), "start_time"),
    (lambda c: c.update(duration_s=True), "duration_s not an integer"),
])
def test_invalid_voice_cdr(mutate, needle):
    c = voice(10)
    mutate(c)
    reason = validate_cdr(c)
    assert reason is not None and needle in reason


@pytest.mark.parametrize("up,down,needle", [
    (None, 10, "DATA CDR without bytes_up"),
    (10, None, "DATA CDR without bytes_down"),
    (-1, 10, "negative bytes_up"),
    (10, -5, "negative bytes_down"),
])
def test_invalid_data_cdr(up, down, needle):
    reason = validate_cdr(data(up, down))
    assert reason is not None and needle in reason


def test_valid_cdrs():
    assert validate_cdr(voice(0)) is None
    assert validate_cdr(sms()) is None
    assert validate_cdr(data(0, 0)) is None
    assert validate_cdr(data(1, 2, called="0044123")) is None


# ------------------------------------------------------------ voice rounding

@pytest.mark.parametrize("inc,dom,duration,billed,amount", [
    (6, 100, 1, 6, 10),        # 1 unit of 6 s: 6*100/60 = 10
    (6, 100, 6, 6, 10),
    (6, 100, 7, 12, 20),       # 2 units
    (6, 100, 61, 66, 110),     # ceil(61/6)=11 units = 66 s: 66*100/60 = 110
    (60, 100, 1, 60, 100),
    (60, 100, 60, 60, 100),
    (60, 100, 61, 120, 200),   # 2 minutes
    (60, 150, 61, 120, 300),   # 120*150/60
    (6, 150, 61, 66, 165),     # 150*6 = 900 is a multiple of 60: 66*150/60 = 165
    (6, 0, 100, 102, 0),       # free rate: 17 units, 0 li
])
def test_voice_mo_domestic_rounding(inc, dom, duration, billed, amount):
    cat = catalog_of(plan(inc=inc, dom=dom))
    r = one(cat, voice(duration))
    assert (r["billed_units"], r["free_units"], r["amount_li"]) == (billed, 0, amount)
    assert r["status"] == "RATED" and r["zone"] == "DOMESTIC" and r["reject_reason"] is None


def test_voice_zero_duration():
    cat = catalog_of(plan(inc=60, free_min=10))
    st = subscriber(cat)
    st, [r] = run(cat, st, voice(0))
    assert (r["billed_units"], r["free_units"], r["amount_li"]) == (0, 0, 0)
    assert r["status"] == "RATED"
    assert st["periods"]["202611"]["voice_s"] == 0


def test_voice_international_no_free_minutes():
    cat = catalog_of(plan(inc=6, intl=1000, free_min=100))
    st = subscriber(cat)
    st, [r] = run(cat, st, voice(61, called="0044207946000"))
    # 66 s * 1000 / 60 = 1100; free minutes untouched
    assert (r["zone"], r["billed_units"], r["free_units"], r["amount_li"]) == ("INTERNATIONAL", 66, 0, 1100)
    assert st["periods"]["202611"]["voice_s"] == 0


def test_voice_0086_is_domestic_and_uses_free_minutes():
    cat = catalog_of(plan(inc=60, free_min=1))
    r = one(cat, voice(30, called="008613800000000"))
    assert (r["zone"], r["billed_units"], r["free_units"], r["amount_li"]) == ("DOMESTIC", 60, 60, 0)


# --------------------------------------------------------- free minutes edges

def test_call_straddling_end_of_free_minutes_6s():
    # 1 free minute = 60 s, increment 6 s, 100 li/min
    cat = catalog_of(plan(inc=6, dom=100, free_min=1))
    st = subscriber(cat)
    st, rs = run(cat, st,
                 voice(50),   # 9 units = 54 s, all free; 6 s left
                 voice(20),   # 4 units = 24 s: 1 unit (6 s) free, 18 s charged = 30 li
                 voice(6))    # nothing free left: 6 s = 10 li
    assert [(r["billed_units"], r["free_units"], r["amount_li"]) for r in rs] == [
        (54, 54, 0), (24, 6, 30), (6, 0, 10)]
    assert st["periods"]["202611"]["voice_s"] == 60
    assert st["balance_li"] == -40


def test_call_straddling_end_of_free_minutes_60s():
    # 2 free minutes, 60 s increment, 100 li/min
    cat = catalog_of(plan(inc=60, dom=100, free_min=2))
    st = subscriber(cat)
    st, rs = run(cat, st,
                 voice(61),    # 2 units = 120 s, all free
                 voice(1),     # 60 s, 0 free: 100 li
                 )
    assert [(r["billed_units"], r["free_units"], r["amount_li"]) for r in rs] == [(120, 120, 0), (60, 0, 100)]
    cat2 = catalog_of(plan(inc=60, dom=100, free_min=2))
    st2 = subscriber(cat2)
    st2, rs2 = run(cat2, st2, voice(30), voice(150))
    # 30 s -> 60 s free (1 min left); 150 s -> 3 units = 180 s, 1 unit free, 120 s charged = 200 li
    assert [(r["billed_units"], r["free_units"], r["amount_li"]) for r in rs2] == [(60, 60, 0), (180, 60, 200)]


def test_free_minutes_exactly_used_up():
    cat = catalog_of(plan(inc=60, dom=100, free_min=1))
    st = subscriber(cat)
    st, rs = run(cat, st, voice(60), voice(60))
    assert [(r["free_units"], r["amount_li"]) for r in rs] == [(60, 0), (0, 100)]


def test_remainder_smaller_than_increment_is_not_usable():
    # plan A: 6 s increment, 1 free minute; plan B: 60 s increment, 1 free minute
    cat = catalog_of(plan("A", inc=6, dom=100, free_min=1), plan("B", inc=60, dom=100, free_min=1))
    st = subscriber(cat, plan_id="A")
    st, [r1] = run(cat, st, voice(30, start=T0))  # 30 s free, 30 s left
    st, _ = apply_subscriber_event(st, {"event_type": "PlanChanged", "event_id": "pc1", "event_time": T0 + HOUR,
                                        "source": "CRM-GD", "subscriber_id": "S1", "plan_id": "B"}, cat)
    st, [r2] = run(cat, st, voice(10, start=T0 + 2 * HOUR))
    # 30 s left but the increment is 60 s: no whole increment free -> 60 s charged = 100 li
    assert (r1["free_units"], r1["amount_li"]) == (30, 0)
    assert (r2["plan_id"], r2["billed_units"], r2["free_units"], r2["amount_li"]) == ("B", 60, 0, 100)
    assert st["periods"]["202611"]["voice_s"] == 30


def test_mt_voice_is_free_and_consumes_nothing():
    cat = catalog_of(plan(inc=60, dom=100, free_min=1))
    st = subscriber(cat)
    st, rs = run(cat, st, voice(61, direction="MT"), voice(61, direction="MT", called="0044123"), voice(60))
    # MT: billed_units = rounded seconds (120), amount 0, free 0; free minute still there for the MO call
    assert [(r["billed_units"], r["free_units"], r["amount_li"]) for r in rs] == [(120, 0, 0), (120, 0, 0), (60, 60, 0)]
    assert st["balance_li"] == 0


def test_period_boundary_at_16_utc_resets_free_minutes():
    cat = catalog_of(plan(inc=60, dom=100, free_min=1))
    st = subscriber(cat)
    nov_end = ms("2026-11-30T15:59:00+00:00")   # 23:59 Shanghai, November
    dec_start = ms("2026-11-30T16:00:00+00:00")  # 00:00 Shanghai, December 1st
    st, rs = run(cat, st,
                 voice(60, start=nov_end),            # uses November's minute
                 voice(60, start=nov_end + 30_000),   # still November: charged 100
                 voice(60, start=dec_start),          # December: fresh minute
                 voice(60, start=dec_start + 1000))   # December used up: 100
    assert [r["billing_period"] for r in rs] == ["202611", "202611", "202612", "202612"]
    assert [(r["free_units"], r["amount_li"]) for r in rs] == [(60, 0), (0, 100), (60, 0), (0, 100)]
    # a late November CDR after December started still sees November's usage
    st, [late] = run(cat, st, voice(60, start=nov_end + 40_000, event_time=dec_start + 2000))
    assert (late["billing_period"], late["free_units"], late["amount_li"]) == ("202611", 0, 100)


def test_plan_change_mid_period_keeps_consumption():
    # A: 2 free minutes; B: 3 free minutes. 2 minutes used under A -> 1 left under B.
    cat = catalog_of(plan("A", inc=60, dom=100, free_min=2), plan("B", inc=60, dom=200, free_min=3))
    st = subscriber(cat, plan_id="A")
    st, [r1] = run(cat, st, voice(120, start=T0))
    st, _ = apply_subscriber_event(st, {"event_type": "PlanChanged", "event_id": "pc", "event_time": T0 + HOUR,
                                        "source": "CRM-GD", "subscriber_id": "S1", "plan_id": "B"}, cat)
    st, [r2] = run(cat, st, voice(180, start=T0 + 2 * HOUR))
    # B: 180 s, 60 s free (3 min - 2 used), 120 s at 200 li/min = 400
    assert (r1["free_units"], r1["amount_li"]) == (120, 0)
    assert (r2["plan_id"], r2["billed_units"], r2["free_units"], r2["amount_li"]) == ("B", 180, 60, 400)


def test_plan_change_to_smaller_allowance_never_negative():
    # A: 5 free minutes, all used; B: 2 free minutes -> remaining max(0, 120 - 300) = 0
    cat = catalog_of(plan("A", inc=60, dom=100, free_min=5), plan("B", inc=60, dom=100, free_min=2))
    st = subscriber(cat, plan_id="A")
    st, _ = run(cat, st, voice(300, start=T0))
    st, _ = apply_subscriber_event(st, {"event_type": "PlanChanged", "event_id": "pc", "event_time": T0 + HOUR,
                                        "source": "CRM-GD", "subscriber_id": "S1", "plan_id": "B"}, cat)
    st, [r] = run(cat, st, voice(60, start=T0 + 2 * HOUR))
    assert (r["free_units"], r["amount_li"]) == (0, 100)


# ------------------------------------------------------------------------- SMS

def test_sms_free_then_domestic_price():
    cat = catalog_of(plan(sms_dom=100, sms_intl=500, free_sms=2))
    st = subscriber(cat)
    st, rs = run(cat, st, sms(), sms(called="0044123"), sms(), sms(), sms(direction="MT"))
    assert [(r["zone"], r["billed_units"], r["free_units"], r["amount_li"]) for r in rs] == [
        ("DOMESTIC", 1, 1, 0),
        ("INTERNATIONAL", 1, 0, 500),  # never free
        ("DOMESTIC", 1, 1, 0),
        ("DOMESTIC", 1, 0, 100),
        ("DOMESTIC", 1, 0, 0),          # MT
    ]
    assert st["periods"]["202611"]["sms"] == 2
    assert st["balance_li"] == -600


def test_mt_international_sms_is_free():
    cat = catalog_of(plan(sms_intl=500))
    r = one(cat, sms(direction="MT", called="0044123"))
    assert (r["zone"], r["amount_li"]) == ("INTERNATIONAL", 0)


# ------------------------------------------------------------------------- DATA

@pytest.mark.parametrize("up,down,li_per_mb,kb,amount", [
    (0, 0, 1000, 0, 0),
    (1, 0, 1000, 1, 1),            # 1 KB: ceil(1000/1024) = 1
    (1024, 0, 1000, 1, 1),
    (1000, 25, 1000, 2, 2),        # 1025 B -> 2 KB: ceil(2000/1024) = 2
    (1024 * 1024, 0, 1000, 1024, 1000),   # 1 MB exactly
    (512 * 1024, 512 * 1024 + 1, 1000, 1025, 1001),  # ceil(1025000/1024) = ceil(1000.97) = 1001
    (10 * 1024, 0, 3, 10, 1),      # ceil(30/1024) = 1
    (2048 * 1024, 0, 3, 2048, 6),  # 2048*3/1024 = 6 exactly
    (5 * 1024, 0, 0, 5, 0),
])
def test_data_rounding(up, down, li_per_mb, kb, amount):
    cat = catalog_of(plan(li_per_mb=li_per_mb))
    r = one(cat, data(up, down))
    assert (r["billed_units"], r["free_units"], r["amount_li"]) == (kb, 0, amount)


def test_data_free_allowance_straddle():
    # 1 free MB = 1024 KB, 1000 li/MB
    cat = catalog_of(plan(li_per_mb=1000, free_mb=1))
    st = subscriber(cat)
    st, rs = run(cat, st,
                 data(1000 * 1024, 0),   # 1000 KB free, 24 KB left
                 data(30 * 1024, 0),     # 30 KB: 24 free, 6 charged: ceil(6000/1024) = 6
                 data(1, 0))             # 1 KB charged: ceil(1000/1024) = 1
    assert [(r["billed_units"], r["free_units"], r["amount_li"]) for r in rs] == [
        (1000, 1000, 0), (30, 24, 6), (1, 0, 1)]
    assert st["periods"]["202611"]["kb"] == 1024


def test_data_mt_is_charged_like_mo():
    cat = catalog_of(plan(li_per_mb=1024))
    r = one(cat, data(2048, 0, direction="MT"))
    assert (r["billed_units"], r["amount_li"]) == (2, 2)
