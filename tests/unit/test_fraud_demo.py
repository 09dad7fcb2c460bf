"""The demo workload against the pure fraud rules (no broker).

"Quiet": the demo without injected fraud raises no alert at all; with fraud it raises
exactly one alert per injected pattern, for the subject the generator recorded. RatedCdr
events for NEW_SUBSCRIBER_SPEND come from re-rating the workload with the rating rules.
Events reach the rules per key in event-time order, as from Kafka partitions.
"""

from collections import defaultdict

import pytest

from processors.fraud import rules
from processors.fraud.config import FraudConfig
from processors.rating.audit import rerate
from telbus import demo

ROUTES = {
    "Login": (rules.LOGIN_BRUTE_FORCE, rules.IMPOSSIBLE_TRAVEL, rules.CREDENTIAL_STUFFING),
    "Cdr": (rules.IRSF, rules.SIMBOX),
    "SubscriberCreated": (rules.NEW_SUBSCRIBER_SPEND,),
    "RatedCdr": (rules.NEW_SUBSCRIBER_SPEND,),
}


def rated_cdrs(events):
    plans = [(i, e) for i, (_t, _k, e) in enumerate(events) if e["event_type"] == "TariffPlan"]
    subs, cdrs = defaultdict(list), defaultdict(list)
    for i, (topic, _k, e) in enumerate(events):
        if topic == "bss.subscriber.events":
            subs[e["subscriber_id"]].append((i, e))
        elif e["event_type"] == "Cdr":
            cdrs[e["subscriber_id"]].append((i, e))
    out = []
    for sub in sorted(cdrs):
        out += rerate(sub, plans, subs[sub], cdrs[sub])
    return out


def run(workload):
    events = [e for _t, _k, e in workload.events if e["event_type"] in ROUTES]
    events += rated_cdrs(workload.events)
    events.sort(key=lambda e: (rules.event_time_of(e), e["event_type"]))
    cfg = FraudConfig()
    states, alerts = {}, []
    for e in events:
        for rule in ROUTES[e["event_type"]]:
            key = (rule, rules.subject_of(rule, e))
            res = rules.DETECTORS[rule](states.get(key), e, cfg)
            states[key] = res.state
            alerts += res.alerts
    return alerts


@pytest.fixture(scope="module")
def quiet():
    return run(demo.generate(fraud=False))


@pytest.fixture(scope="module")
def with_fraud():
    w = demo.generate(fraud=True)
    return w, run(w)


def test_demo_without_fraud_raises_no_alert(quiet):
    assert quiet == []


def test_demo_with_fraud_raises_one_alert_per_injected_pattern(with_fraud):
    w, alerts = with_fraud
    injected = w.manifest["fraud"]
    assert sorted(a["rule"] for a in alerts) == sorted(injected)
    for a in alerts:
        info = injected[a["rule"]]
        assert a["subject"] in info["subjects"]
        assert a["subject_type"] == info["subject_type"]
        if a["rule"] != rules.NEW_SUBSCRIBER_SPEND:
            assert a["first_event_id"] in info["event_ids"]
