"""Unit tests of the pure fraud rules (processors/fraud/rules.py), on every threshold edge."""

import itertools
import json
import random

import pytest

from processors.fraud import rules
from processors.fraud.config import FraudConfig
from processors.fraud.rules import InvalidEvent

T0 = 1_763_600_000_000  # 2025-11-20T00:53:20Z
S = 1000
MIN = 60 * S
H = 60 * MIN
CFG = FraudConfig()


class Run:
    """Feeds events through one detector, round-tripping the state through JSON each step
    (as a changelog-backed table would), and collects the outputs and signals."""

    def __init__(self, detector, config=CFG):
        self.detector, self.config = detector, config
        self.state = None
        self.alerts, self.suppressed, self.late, self.duplicate = [], 0, 0, 0

    def feed(self, *events):
        out = []
        for e in events:
            before = json.dumps(self.state, sort_keys=True)
            res = self.detector(json.loads(before) if self.state else None, e, self.config)
            # the input state is never mutated
            assert json.dumps(self.state, sort_keys=True) == before
            self.state = json.loads(json.dumps(res.state))
            out += res.alerts
            self.suppressed += res.suppressed
            self.late += int(res.late)
            self.duplicate += int(res.duplicate)
        self.alerts += out
        return out


_ids = itertools.count()


def login(t, result="BAD_PASSWORD", account="acc-1", ip="10.0.0.1", province="GD", eid=None):
    return {
        "event_type": "Login",
        "event_id": eid or f"login-{next(_ids):06d}",
        "event_time": t,
        "source": "AAA",
        "login_id": f"l-{t}",
        "account": account,
        "account_type": "BROADBAND",
        "client": "EHOME_CLIENT",
        "result": result,
        "source_ip": ip,
        "province": province,
        "device_id": None,
    }


def cdr(t, called="0088161234567", direction="MO", service="VOICE", duration=60,
        sub="sub-1", eid=None):
    i = next(_ids)
    return {
        "event_type": "Cdr",
        "event_id": eid or f"cdr-ev-{i:06d}",
        "event_time": t,
        "source": "MEDIATION",
        "cdr_id": f"cdr-{i:06d}",
        "subscriber_id": sub,
        "service": service,
        "direction": direction,
        "calling_number": "13800000000",
        "called_number": called,
        "start_time": t,
        "duration_s": duration if service == "VOICE" else None,
        "bytes_up": None,
        "bytes_down": None,
        "cell_id": None,
        "province": "GD",
    }


def created(t, sub="sub-1", eid="sc-1"):
    return {
        "event_type": "SubscriberCreated",
        "event_id": eid,
        "event_time": t,
        "source": "CRM-GD",
        "subscriber_id": sub,
        "msisdn": "13800000000",
        "account_id": "a-1",
        "home_province": "GD",
        "payment_type": "POSTPAID",
        "plan_id": "P1",
        "real_name": "x",
        "id_number": "y",
        "broadband_account": None,
        "broadband_type": "NONE",
        "access_ne_id": None,
    }


def rated(t, amount, sub="sub-1", status="RATED", cdr_id=None):
    return {
        "event_type": "RatedCdr",
        "cdr_id": cdr_id or f"r-{next(_ids):06d}",
        "subscriber_id": sub,
        "service": "VOICE",
        "direction": "MO",
        "zone": "INTERNATIONAL",
        "billed_units": 60,
        "free_units": 0,
        "amount_li": amount,
        "plan_id": "P1",
        "plan_version": 1,
        "billing_period": "202511",
        "balance_after_li": -amount,
        "status": status,
        "reject_reason": None,
        "rated_at": t,
    }


def check_alert(a, rule, subject, subject_type, severity):
    assert a["event_type"] == "FraudAlert"
    assert a["rule"] == rule and a["subject"] == subject
    assert a["subject_type"] == subject_type and a["severity"] == severity
    assert a["alert_id"] == f"{rule}:{subject}:{a['window_start']}:{a['window_end']}"
    assert a["window_start"] <= a["window_end"]
    assert all(isinstance(v, int) for v in a["evidence"].values())


# =========================================================== LOGIN_BRUTE_FORCE


def test_brute_force_4_failures_no_alert_5_alert():
    r = Run(rules.brute_force)
    evs = [login(T0 + i * 10 * S) for i in range(5)]
    assert r.feed(*evs[:4]) == []
    [a] = r.feed(evs[4])
    check_alert(a, "LOGIN_BRUTE_FORCE", "acc-1", "ACCOUNT", "MEDIUM")
    assert a["evidence"] == {"failures": 5}
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 40 * S)
    assert a["first_event_id"] == evs[0]["event_id"]


@pytest.mark.parametrize("span_s,fires", [(59, True), (60, False), (61, False)])
def test_brute_force_window_edge(span_s, fires):
    r = Run(rules.brute_force)
    times = [T0, T0 + 10 * S, T0 + 20 * S, T0 + 30 * S, T0 + span_s * S]
    r.feed(*[login(t) for t in times])
    assert len(r.alerts) == int(fires)


def test_brute_force_counts_only_bad_password():
    r = Run(rules.brute_force)
    r.feed(*[login(T0 + i * S, result=res)
             for i, res in enumerate(["BAD_PASSWORD"] * 4 + ["LOCKED", "UNKNOWN_ACCOUNT", "SUCCESS"])])
    assert r.alerts == []
    r.feed(login(T0 + 8 * S))
    assert len(r.alerts) == 1


def test_brute_force_per_account_state_is_separate():
    r1, r2 = Run(rules.brute_force), Run(rules.brute_force)
    for i in range(5):
        (r1 if i % 2 else r2).feed(login(T0 + i * S, account=f"acc-{i % 2}"))
    assert r1.alerts == [] and r2.alerts == []


def test_brute_force_out_of_order_inside_lateness_counts():
    r = Run(rules.brute_force)
    r.feed(login(T0), login(T0 + 10 * S), login(T0 + 50 * S), login(T0 + 59 * S))
    # watermark T0+59s; an event at T0+30s is 29 s late (< 30 s): still counts
    late_first = login(T0 + 30 * S)
    [a] = r.feed(late_first)
    assert r.late == 0
    assert a["evidence"] == {"failures": 5}
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 59 * S)


def test_brute_force_out_of_order_at_exact_lateness_still_counts():
    r = Run(rules.brute_force)
    r.feed(login(T0), login(T0 + 10 * S), login(T0 + 20 * S), login(T0 + 50 * S))
    [a] = r.feed(login(T0 + 20 * S))  # watermark - 30 s exactly: not late
    assert r.late == 0 and a["evidence"]["failures"] == 5


def test_brute_force_out_of_order_outside_lateness_is_late_and_ignored():
    r = Run(rules.brute_force)
    r.feed(login(T0), login(T0 + 40 * S), login(T0 + 50 * S), login(T0 + 80 * S))
    assert r.feed(login(T0 + 50 * S - 1)) == []  # 30.001 s behind the watermark
    assert r.late == 1
    # had it counted, [T0+40s, T0+100s) would now hold 5 failures
    assert r.feed(login(T0 + 85 * S)) == []
    assert r.alerts == []


def test_brute_force_order_does_not_matter_within_lateness():
    evs = [login(T0 + i * 7 * S) for i in range(5)]
    for perm in itertools.permutations(evs):
        r = Run(rules.brute_force)
        r.feed(*perm)
        assert len(r.alerts) == 1
        assert r.alerts[0]["window_start"] == T0
        assert r.alerts[0]["evidence"] == {"failures": 5}


def test_brute_force_duplicate_event_counted_once():
    r = Run(rules.brute_force)
    e = login(T0)
    r.feed(e, e, e, e, e)
    assert r.alerts == [] and r.duplicate == 4
    r.feed(*[login(T0 + i * S) for i in range(1, 4)])
    assert r.alerts == []
    r.feed(login(T0 + 5 * S))
    assert len(r.alerts) == 1


def test_suppression_within_10_min_folds_then_new_alert_after():
    r = Run(rules.brute_force)
    r.feed(*[login(T0 + i * S) for i in range(5)])
    [first] = r.alerts
    hit_at = first["window_end"]
    # a continuing attack, each failure is a hit: suppressed, folded, not emitted
    assert r.feed(login(T0 + 5 * S), login(T0 + 6 * S)) == []
    assert r.suppressed == 2
    [rec] = r.state["alerts"]
    assert rec["alert_id"] == first["alert_id"]
    assert rec["suppressed"] == 2 and rec["evidence"]["failures"] == 7
    # a new burst 9 min 59 s after the alert: still suppressed
    r.feed(*[login(hit_at + 10 * MIN - S - 4 * S + i * S) for i in range(5)])
    assert len(r.alerts) == 1 and r.suppressed == 3
    # a burst whose hit is 10 min after the alert: a new alert
    [second] = r.feed(*[login(hit_at + 10 * MIN - 4 * S + i * S) for i in range(5)])
    assert second["window_end"] == hit_at + 10 * MIN
    assert second["alert_id"] != first["alert_id"]
    # the overlapping second burst's first 4 hits end before 10 min: folded too
    assert r.suppressed == 3 + 4


def test_suppression_hit_just_before_and_after_10_min():
    cfg = FraudConfig(brute_force_failures=1)
    r = Run(rules.brute_force, cfg)
    r.feed(login(T0))
    r.feed(login(T0 + 10 * MIN - 1))
    assert len(r.alerts) == 1 and r.suppressed == 1
    r.feed(login(T0 + 10 * MIN))
    assert len(r.alerts) == 2


# =========================================================== CREDENTIAL_STUFFING


def stuffing_run(n_accounts, span_s=50, result="BAD_PASSWORD"):
    r = Run(rules.credential_stuffing)
    step = span_s * S // max(n_accounts - 1, 1)
    r.feed(*[login(T0 + i * step, result=result, account=f"victim-{i:03d}", ip="203.0.113.9")
             for i in range(n_accounts)])
    return r


def test_stuffing_19_vs_20_distinct_accounts():
    assert stuffing_run(19).alerts == []
    [a] = stuffing_run(20).alerts
    check_alert(a, "CREDENTIAL_STUFFING", "203.0.113.9", "SOURCE_IP", "HIGH")
    assert a["evidence"] == {"failures": 20, "distinct_accounts": 20}
    assert a["window_start"] == T0


@pytest.mark.parametrize("span_s,fires", [(59, True), (61, False)])
def test_stuffing_window_edge(span_s, fires):
    r = Run(rules.credential_stuffing)
    times = [T0 + i * S for i in range(19)] + [T0 + span_s * S]
    r.feed(*[login(t, account=f"v{i}", ip="1.2.3.4") for i, t in enumerate(times)])
    assert len(r.alerts) == int(fires)


def test_stuffing_repeated_account_is_not_distinct():
    r = Run(rules.credential_stuffing)
    r.feed(*[login(T0 + i * S, account=f"v{i % 19}", ip="1.2.3.4") for i in range(40)])
    assert r.alerts == []


@pytest.mark.parametrize("result", ["LOCKED", "UNKNOWN_ACCOUNT"])
def test_stuffing_counts_every_failed_result(result):
    assert len(stuffing_run(20, result=result).alerts) == 1


def test_stuffing_ignores_success():
    assert stuffing_run(20, result="SUCCESS").alerts == []


class OriginRun(Run):
    """Credential stuffing fed through the repartition: each event has a source partition."""

    def __init__(self):
        super().__init__(rules.credential_stuffing)

    def feed_from(self, origin, *events):
        self.detector = lambda st, e, c: rules.credential_stuffing(st, e, c, origin=origin)
        return self.feed(*events)


def test_stuffing_lateness_is_per_source_partition():
    r = OriginRun()
    # partition "1" is consumed first and is 45 s ahead of partition "0": not late
    r.feed_from("1", *[login(T0 + 40 * S + i * S, account=f"b{i}", ip="1.2.3.4") for i in range(10)])
    r.feed_from("0", *[login(T0 + i * S, account=f"a{i}", ip="1.2.3.4") for i in range(10)])
    assert r.late == 0
    [a] = r.alerts
    assert a["evidence"] == {"failures": 20, "distinct_accounts": 20}
    assert a["window_start"] == T0
    assert set(r.state["wmo"]) == {"0", "1"}


def test_stuffing_out_of_order_inside_one_partition_is_late():
    r = OriginRun()
    r.feed_from("0", login(T0 + MIN, account="x", ip="1.2.3.4"))
    r.feed_from("0", login(T0 + MIN - 31 * S, account="y", ip="1.2.3.4"))
    assert r.late == 1
    r.feed_from("1", login(T0 + MIN - 31 * S, account="z", ip="1.2.3.4"))
    assert r.late == 1


def test_stuffing_beyond_merge_skew_is_late():
    r = OriginRun()
    r.feed_from("0", login(T0 + 2 * H, account="x", ip="1.2.3.4"))
    r.feed_from("1", login(T0 + H - 31 * S, account="y", ip="1.2.3.4"))
    assert r.late == 1
    r.feed_from("2", login(T0 + H - 29 * S, account="y", ip="1.2.3.4"))
    assert r.late == 1 and len(r.state["entries"]) == 2


# =========================================================== IMPOSSIBLE_TRAVEL


@pytest.mark.parametrize("gap_min,fires", [(9, True), (10, False), (11, False)])
def test_travel_different_provinces_gap(gap_min, fires):
    r = Run(rules.impossible_travel)
    a, b = login(T0, "SUCCESS", province="GD"), login(T0 + gap_min * MIN, "SUCCESS", province="BJ")
    r.feed(a, b)
    assert len(r.alerts) == int(fires)
    if fires:
        [al] = r.alerts
        check_alert(al, "IMPOSSIBLE_TRAVEL", "acc-1", "ACCOUNT", "HIGH")
        assert al["evidence"] == {"logins": 2, "distinct_provinces": 2}
        assert (al["window_start"], al["window_end"]) == (T0, T0 + gap_min * MIN)
        assert al["first_event_id"] == a["event_id"]


def test_travel_same_province_no_alert():
    r = Run(rules.impossible_travel)
    r.feed(*[login(T0 + i * MIN, "SUCCESS", province="GD") for i in range(20)])
    assert r.alerts == []


def test_travel_needs_two_successes():
    r = Run(rules.impossible_travel)
    r.feed(login(T0, "SUCCESS", province="GD"), login(T0 + MIN, "BAD_PASSWORD", province="BJ"))
    assert r.alerts == []


def test_travel_out_of_order_inside_lateness():
    r = Run(rules.impossible_travel)
    r.feed(login(T0 + 5 * MIN, "SUCCESS", province="BJ"))
    [a] = r.feed(login(T0 + 5 * MIN - 20 * S, "SUCCESS", province="GD"))
    assert a["window_start"] == T0 + 5 * MIN - 20 * S


def test_travel_out_of_order_outside_lateness():
    r = Run(rules.impossible_travel)
    r.feed(login(T0 + 5 * MIN, "SUCCESS", province="BJ"))
    assert r.feed(login(T0 + 5 * MIN - 31 * S, "SUCCESS", province="GD")) == []
    assert r.late == 1


def test_travel_hopping_back_and_forth_is_one_alert_per_10_min():
    r = Run(rules.impossible_travel)
    r.feed(*[login(T0 + i * MIN, "SUCCESS", province="GD" if i % 2 else "SH") for i in range(10)])
    assert len(r.alerts) == 1 and r.suppressed == 8


# =========================================================== IRSF


def test_irsf_2_vs_3_calls():
    r = Run(rules.irsf)
    calls = [cdr(T0 + i * 5 * MIN, called=p + "1234567", duration=30)
             for i, p in enumerate(["00881", "00979", "00808"])]
    assert r.feed(*calls[:2]) == []
    [a] = r.feed(calls[2])
    check_alert(a, "IRSF", "sub-1", "SUBSCRIBER", "CRITICAL")
    assert a["evidence"] == {"calls": 3, "seconds": 90, "calls_trigger": 1, "seconds_trigger": 0}
    assert a["first_event_id"] == calls[0]["event_id"]
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 10 * MIN)


def test_irsf_duration_trigger_1799_vs_1800_seconds():
    r = Run(rules.irsf)
    assert r.feed(cdr(T0, duration=1000), cdr(T0 + 20 * MIN, duration=799)) == []
    r = Run(rules.irsf)
    [a] = r.feed(cdr(T0, duration=1000), cdr(T0 + 20 * MIN, duration=800))
    assert a["evidence"] == {"calls": 2, "seconds": 1800, "calls_trigger": 0, "seconds_trigger": 1}


def test_irsf_single_long_call():
    [a] = Run(rules.irsf).feed(cdr(T0, called="00870123", duration=3600))
    assert a["evidence"]["seconds_trigger"] == 1 and a["evidence"]["calls"] == 1


@pytest.mark.parametrize("span_min,fires", [(59, True), (61, False)])
def test_irsf_window_edge(span_min, fires):
    r = Run(rules.irsf)
    r.feed(cdr(T0), cdr(T0 + MIN), cdr(T0 + span_min * MIN))
    assert len(r.alerts) == int(fires)


@pytest.mark.parametrize(
    "kw",
    [
        {"called": "0044201234567"},  # international, not high-risk
        {"called": "13912345678"},  # domestic
        {"called": "0086881234"},  # not a high-risk prefix
        {"direction": "MT"},
        {"service": "SMS"},
        {"called": None},
    ],
)
def test_irsf_ignores_other_traffic(kw):
    r = Run(rules.irsf)
    r.feed(*[cdr(T0 + i * MIN, **kw) for i in range(5)])
    assert r.alerts == []


def test_irsf_plus_notation_is_high_risk():
    r = Run(rules.irsf)
    r.feed(*[cdr(T0 + i * MIN, called="+8821234567") for i in range(3)])
    assert len(r.alerts) == 1


def test_irsf_prefixes_are_configurable():
    cfg = FraudConfig(irsf_prefixes=("0044",))
    r = Run(rules.irsf, cfg)
    r.feed(*[cdr(T0 + i * MIN, called="0044201234567") for i in range(3)])
    assert len(r.alerts) == 1
    r = Run(rules.irsf, cfg)
    r.feed(*[cdr(T0 + i * MIN, called="00881234567") for i in range(3)])
    assert r.alerts == []


def test_irsf_out_of_order_inside_and_outside_lateness():
    r = Run(rules.irsf)
    r.feed(cdr(T0 + 30 * MIN), cdr(T0 + 40 * MIN))
    assert r.feed(cdr(T0 + 40 * MIN - 31 * S)) == [] and r.late == 1
    [a] = r.feed(cdr(T0 + 40 * MIN - 29 * S))
    assert a["window_start"] == T0 + 30 * MIN


# =========================================================== SIMBOX


def simbox_calls(n, distinct, start=T0, step=MIN // 2, sub="sub-1"):
    return [cdr(start + i * step, called=f"139{(i % distinct):08d}", duration=40, sub=sub)
            for i in range(n)]


def test_simbox_49_vs_50_calls():
    r = Run(rules.simbox)
    calls = simbox_calls(50, 40)
    assert r.feed(*calls[:49]) == []
    [a] = r.feed(calls[49])
    check_alert(a, "SIMBOX", "sub-1", "SUBSCRIBER", "HIGH")
    assert a["evidence"] == {"calls": 50, "distinct_numbers": 40, "mt_calls": 0}
    assert a["first_event_id"] == calls[0]["event_id"]
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 49 * MIN // 2)


def test_simbox_39_vs_40_distinct_numbers():
    r = Run(rules.simbox)
    r.feed(*simbox_calls(60, 39))
    assert r.alerts == []
    r = Run(rules.simbox)
    r.feed(*simbox_calls(50, 40))
    assert len(r.alerts) == 1


def test_simbox_one_mt_call_in_window_prevents_alert():
    r = Run(rules.simbox)
    calls = simbox_calls(50, 50)
    r.feed(*calls[:25], cdr(T0 + 13 * MIN, direction="MT", called="13800000000"), *calls[25:])
    assert r.alerts == []


def test_simbox_mt_call_outside_the_window_does_not_prevent():
    r = Run(rules.simbox)
    r.feed(cdr(T0 - S, direction="MT", called="13800000000"), *simbox_calls(50, 50))
    assert len(r.alerts) == 1


def test_simbox_mt_sms_is_not_a_call():
    r = Run(rules.simbox)
    calls = simbox_calls(50, 50)
    r.feed(*calls[:25], cdr(T0 + 13 * MIN, direction="MT", service="SMS"), *calls[25:])
    assert len(r.alerts) == 1


def test_simbox_calls_spread_over_more_than_an_hour():
    r = Run(rules.simbox)
    r.feed(*simbox_calls(50, 50, step=73 * S))  # 49 * 73 s = 59 min 37 s: fires
    assert len(r.alerts) == 1
    r = Run(rules.simbox)
    r.feed(*simbox_calls(50, 50, step=74 * S))  # 49 * 74 s = 60 min 26 s: does not
    assert r.alerts == []


def test_simbox_late_mt_outside_lateness_is_ignored():
    r = Run(rules.simbox)
    calls = simbox_calls(50, 50)
    r.feed(*calls[:40])
    r.feed(cdr(T0, direction="MT"))  # far behind the watermark
    assert r.late == 1
    r.feed(*calls[40:])
    assert len(r.alerts) == 1


# =========================================================== NEW_SUBSCRIBER_SPEND


@pytest.mark.parametrize("after,fires", [(23 * H + 59 * MIN, True), (24 * H, False),
                                         (24 * H + MIN, False)])
def test_new_subscriber_spend_23h59_vs_24h01(after, fires):
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0))
    r.feed(rated(T0 + after, 100_000))
    assert len(r.alerts) == int(fires)
    if fires:
        [a] = r.alerts
        check_alert(a, "NEW_SUBSCRIBER_SPEND", "sub-1", "SUBSCRIBER", "MEDIUM")
        assert a["evidence"] == {"amount_li": 100_000, "rated_cdrs": 1}
        assert (a["window_start"], a["window_end"]) == (T0, T0 + after)
        assert a["first_event_id"] == "sc-1"


def test_new_subscriber_spend_99999_vs_100000_accumulated():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), rated(T0 + H, 60_000), rated(T0 + 2 * H, 39_999))
    assert r.alerts == []
    [a] = r.feed(rated(T0 + 3 * H, 1))
    assert a["evidence"] == {"amount_li": 100_000, "rated_cdrs": 3}


def test_new_subscriber_spend_before_creation_does_not_count():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), rated(T0 - S, 100_000))
    assert r.alerts == []


def test_new_subscriber_spend_ignores_rejected_duplicate_and_zero():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), rated(T0 + H, 100_000, status="REJECTED"),
           rated(T0 + H, 100_000, status="DUPLICATE"), rated(T0 + H, 0))
    assert r.alerts == []


def test_new_subscriber_spend_same_cdr_twice_counts_once():
    r = Run(rules.new_subscriber_spend)
    again = rated(T0 + H, 50_000, cdr_id="c-1")
    r.feed(created(T0), again, again)
    assert r.alerts == [] and r.duplicate == 1


def test_new_subscriber_spend_without_creation_never_alerts():
    r = Run(rules.new_subscriber_spend)
    r.feed(*[rated(T0 + i * 10 * MIN, 100_000) for i in range(300)])  # 50 h
    assert r.alerts == []
    # only lateness + merge skew (1 h 30 s) is buffered while the creation is unknown
    assert len(r.state["entries"]) == 7


def test_new_subscriber_spend_rated_before_created_within_lateness():
    r = Run(rules.new_subscriber_spend)
    r.feed(rated(T0 + 10 * S, 100_000))
    [a] = r.feed(created(T0))
    assert a["window_start"] == T0 and a["window_end"] == T0 + 10 * S


def test_new_subscriber_spend_creation_behind_the_rated_stream_still_joins():
    # the two topics are separate inputs: the creation may trail the rated stream by up
    # to the merge skew (1 h) + lateness and still join
    r = Run(rules.new_subscriber_spend)
    r.feed(rated(T0 + 50 * MIN, 60_000), rated(T0 + 55 * MIN, 40_000))
    [a] = r.feed(created(T0))
    assert r.late == 0
    assert a["evidence"] == {"amount_li": 100_000, "rated_cdrs": 2}
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 55 * MIN)


def test_new_subscriber_spend_created_beyond_merge_skew_is_late():
    r = Run(rules.new_subscriber_spend)
    r.feed(rated(T0 + H + 31 * S, 100_000))
    assert r.feed(created(T0)) == [] and r.late == 1


def test_new_subscriber_spend_rated_out_of_order_within_its_own_stream():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), rated(T0 + H, 10))
    assert r.feed(rated(T0 + H - 31 * S, 100_000)) == [] and r.late == 1
    [a] = r.feed(rated(T0 + H - 29 * S, 100_000))
    assert a["evidence"]["amount_li"] == 100_010


def test_new_subscriber_spend_suppression_then_realert():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), rated(T0 + H, 100_000))
    r.feed(rated(T0 + H + 5 * MIN, 1000))
    assert len(r.alerts) == 1 and r.suppressed == 1
    [a] = r.feed(rated(T0 + H + 10 * MIN, 1000))
    assert a["evidence"] == {"amount_li": 102_000, "rated_cdrs": 3}


def test_new_subscriber_spend_recreated_is_ignored():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0), created(T0 + 48 * H, eid="sc-2"), rated(T0 + 49 * H, 200_000))
    assert r.alerts == []


# =========================================================== state bounds


def _size(state):
    return len(json.dumps(state))


@pytest.mark.parametrize(
    "detector,make,expected",
    [
        (rules.brute_force, lambda t, i: login(t), 20),
        (rules.credential_stuffing, lambda t, i: login(t, account=f"v{i}"), 20),
        (rules.impossible_travel,
         lambda t, i: login(t, "SUCCESS", province="GD" if i % 2 else "BJ"), 20),
        (rules.irsf, lambda t, i: cdr(t), 20),
        (rules.simbox, lambda t, i: cdr(t, called=f"139{i:08d}"), 20),
        (rules.simbox,
         lambda t, i: cdr(t, called=f"139{i:08d}", direction="MT" if i % 7 == 0 else "MO"), 0),
    ],
)
def test_state_is_bounded_after_many_windows(detector, make, expected):
    r = Run(detector)
    sizes = []
    for day in range(0, 20):  # a busy burst every 2 h over 40 h
        base = T0 + day * 2 * H
        r.feed(*[make(base + i * S, i) for i in range(60)])
        sizes.append(_size(r.state))
    assert len(r.alerts) == expected
    assert max(sizes[5:]) <= max(sizes[:5]) * 1.2
    assert len(r.state["alerts"]) <= 3


def test_new_subscriber_spend_state_is_bounded():
    r = Run(rules.new_subscriber_spend)
    r.feed(created(T0))
    for i in range(24 * 30):  # a month of hourly spends
        r.feed(rated(T0 + i * H, 10_000))
    assert r.state["entries"] == [] and r.state["alerts"] == []
    assert rules.is_idle(r.state)


def test_entries_are_capped():
    cfg = FraudConfig(max_window_events=100)
    r = Run(rules.brute_force, cfg)
    r.feed(*[login(T0 + i) for i in range(1000)])  # 1000 failures in one second
    assert len(r.state["entries"]) == 100


def test_expire_drops_idle_keys_and_keeps_live_ones():
    r = Run(rules.brute_force)
    r.feed(*[login(T0 + i * S) for i in range(5)])
    assert rules.expire("LOGIN_BRUTE_FORCE", r.state, T0 + 10 * S, CFG) is not None
    assert rules.expire("LOGIN_BRUTE_FORCE", r.state, T0 + H, CFG) is None
    kept = rules.expire("LOGIN_BRUTE_FORCE", r.state, T0 + 2 * MIN, CFG)
    assert kept["entries"] == [] and len(kept["alerts"]) == 1 and kept["wm"] == r.state["wm"]
    r2 = Run(rules.new_subscriber_spend)
    r2.feed(created(T0))
    assert rules.expire("NEW_SUBSCRIBER_SPEND", r2.state, T0 + H, CFG) is not None
    assert rules.expire("NEW_SUBSCRIBER_SPEND", r2.state, T0 + 25 * H, CFG) is not None
    assert rules.expire("NEW_SUBSCRIBER_SPEND", r2.state, T0 + 25 * H + 31 * S, CFG) is None
    assert rules.expire("IRSF", None, T0, CFG) is None


# =========================================================== determinism, input checks


@pytest.mark.parametrize("seed", range(5))
def test_shuffle_within_lateness_gives_same_alert_set(seed):
    rng = random.Random(seed)
    evs = []
    for burst in range(6):
        base = T0 + burst * 15 * MIN
        evs += [login(base + i * 3 * S) for i in range(8)]
    ref = Run(rules.brute_force)
    ref.feed(*evs)
    # displace every event by at most 10 s of arrival order (well inside 30 s lateness)
    shuffled = sorted(evs, key=lambda e: e["event_time"] + rng.randint(0, 10 * S))
    got = Run(rules.brute_force)
    got.feed(*shuffled)
    assert got.late == 0
    assert len(got.alerts) == len(ref.alerts) == 6
    assert [a["window_start"] for a in got.alerts] == [a["window_start"] for a in ref.alerts]
    assert got.suppressed == ref.suppressed


def test_replay_is_deterministic():
    evs = [login(T0 + i * 2 * S, account="a", ip="9.9.9.9") for i in range(50)]
    outs = []
    for _ in range(2):
        r = Run(rules.brute_force)
        r.feed(*evs)
        outs.append(json.dumps([r.alerts, r.state], sort_keys=True))
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    "detector,event",
    [
        (rules.brute_force, dict(login(T0), event_time="2025-11-20")),
        (rules.brute_force, dict(login(T0), account="")),
        (rules.brute_force, dict(login(T0), event_type="Cdr")),
        (rules.credential_stuffing, dict(login(T0), source_ip=None)),
        (rules.irsf, dict(cdr(T0), duration_s=-1)),
        (rules.irsf, dict(cdr(T0), event_time=True)),
        (rules.simbox, dict(cdr(T0, called="139"), called_number=None)),
        (rules.new_subscriber_spend, dict(rated(T0, 5), amount_li="5")),
        (rules.new_subscriber_spend, login(T0)),
    ],
)
def test_invalid_events_raise(detector, event):
    with pytest.raises(InvalidEvent):
        detector(None, event, CFG)


def test_subject_and_time_helpers():
    e = login(T0, account="acc-9", ip="5.6.7.8")
    assert rules.subject_of("LOGIN_BRUTE_FORCE", e) == "acc-9"
    assert rules.subject_of("IMPOSSIBLE_TRAVEL", e) == "acc-9"
    assert rules.subject_of("CREDENTIAL_STUFFING", e) == "5.6.7.8"
    assert rules.subject_of("IRSF", cdr(T0, sub="s-7")) == "s-7"
    assert rules.event_time_of(rated(T0 + 5, 1)) == T0 + 5
    assert rules.event_time_of(e) == T0
    assert set(rules.DETECTORS) == set(rules.ALL_RULES) == set(rules.SEVERITY)
