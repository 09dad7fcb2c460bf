"""Audit re-rating (pure part): contract ordering, matching by cdr_id occurrence, diffs."""
from __future__ import annotations

import copy

from processors.rating import audit

try:
    from test_rating_rules import HOUR, T0, created, plan, voice
except ImportError:
    from tests.unit.test_rating_rules import HOUR, T0, created, plan, voice


def _setup():
    p1 = plan("P1", inc=60, dom=100, free_min=1)
    p1["event_time"] = T0 - 10 * HOUR
    c1 = voice(60, start=T0, cdr_id="C1")
    c2 = voice(60, start=T0 + 60_000, cdr_id="C2")
    dup = voice(60, start=T0, cdr_id="C1", event_time=T0 + HOUR)
    return p1, [(0, created())], [(0, c1), (1, c2), (2, dup)]


def test_rerate_in_contract_order():
    p1, subs, cdrs = _setup()
    # offsets deliberately out of event-time order: the audit sorts by event time
    out = audit.rerate("S1", [(5, p1)], subs, list(reversed(cdrs)))
    assert [(r["cdr_id"], r["status"], r["free_units"], r["amount_li"]) for r in out] == [
        ("C1", "RATED", 60, 0), ("C2", "RATED", 0, 100), ("C1", "DUPLICATE", 0, 0)]


def test_ties_plans_then_subscriber_events_then_cdrs():
    p = plan("P1", inc=60, dom=100, effective_from=T0)
    p["event_time"] = T0
    sc = created(t=T0)
    c = voice(60, start=T0, cdr_id="C1")
    # all three at the same event time, given in the worst order
    out = audit.rerate("S1", [(9, p)], [(0, sc)], [(0, c)])
    assert [(r["status"], r["plan_id"], r["amount_li"]) for r in out] == [("RATED", "P1", 100)]


def test_other_subscribers_and_invalid_records_are_ignored():
    p1, subs, cdrs = _setup()
    other = voice(60, start=T0, sub="S2", cdr_id="X")
    bad = voice(60, start=T0, cdr_id="BAD")
    bad["duration_s"] = -1
    out = audit.rerate("S1", [(0, p1), (1, plan("P9", dom=15))], subs, cdrs + [(3, other), (4, bad)])
    assert [r["cdr_id"] for r in out] == ["C1", "C2", "C1"]


def test_agreement_and_differences():
    p1, subs, cdrs = _setup()
    expected = audit.rerate("S1", [(0, p1)], subs, cdrs)
    rep = audit.report("S1", "202611", expected, copy.deepcopy(expected))
    assert rep["agree"] and rep["rerated"] == 3 and rep["live"] == 3
    assert audit.format_text(rep).startswith("AGREE subscriber=S1 period=202611 rerated=3 live=3")

    live = copy.deepcopy(expected)
    live[1]["amount_li"] = 999
    del live[2]                                  # the DUPLICATE never published
    live.append(dict(expected[1], cdr_id="GHOST"))
    rep = audit.report("S1", "202611", expected, live)
    assert not rep["agree"]
    text = audit.format_text(rep).splitlines()
    assert "DIFF C2: amount_li live=999 audit=100" in text
    assert "DIFF C1#2: missing from bss.cdr.rated" in text
    assert "DIFF GHOST: in bss.cdr.rated, not in the re-rating" in text
    assert text[-1].startswith("DISAGREE") and text[-1].endswith("differences=3")


def test_only_the_asked_period_is_compared():
    p1, subs, cdrs = _setup()
    expected = audit.rerate("S1", [(0, p1)], subs, cdrs)
    rep = audit.report("S1", "202612", expected, [])
    assert rep["agree"] and rep["rerated"] == 0
