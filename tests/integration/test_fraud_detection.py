"""Fraud detection end to end on a real broker: a `telbus worker` consumes sec.login.events,
net.cdr.raw, bss.subscriber.events and bss.cdr.rated and publishes sec.fraud.alerts.

Each test uses its own accounts, IPs and subscriber ids, so the tests share one worker.
A negative case is always followed, on the same key, by a positive "sentinel" whose alert
can only appear after the negative events were processed (same partition, in order; for
credential stuffing the sentinel needs every source partition). So "exactly one alert,
the sentinel's" proves the negative raised nothing, without sleeping.
"""
from __future__ import annotations

import itertools

import pytest
from telbus import config, kafka
from telbus.localbroker import free_port
from tests.helpers import Proc, produce, read_topic, unique, wait_until

pytestmark = pytest.mark.integration

T0 = 1_795_200_000_000
S = 1000
MIN = 60 * S
H = 60 * MIN
ALERTS = "sec.fraud.alerts"
_n = itertools.count()


# ---------------------------------------------------------------------- events
def login(t, account, result="BAD_PASSWORD", ip="198.51.100.7", province="GD"):
    i = next(_n)
    return {"event_type": "Login", "event_id": unique(f"lg{i}-"), "event_time": t,
            "source": "UAM", "login_id": f"L{i}", "account": account,
            "account_type": "MSISDN", "client": "ONLINE_HALL", "result": result,
            "source_ip": ip, "province": province, "device_id": None}


def cdr(t, sub, called="0088212345678", direction="MO", duration=60):
    i = next(_n)
    return {"event_type": "Cdr", "event_id": unique(f"cd{i}-"), "event_time": t,
            "source": "MEDIATION", "cdr_id": unique("CDR-"), "subscriber_id": sub,
            "service": "VOICE", "direction": direction, "calling_number": "13312345678",
            "called_number": called, "start_time": t, "duration_s": duration,
            "bytes_up": None, "bytes_down": None, "cell_id": None, "province": "GD"}


def created(t, sub):
    return {"event_type": "SubscriberCreated", "event_id": unique("sc-"), "event_time": t,
            "source": "CRM-GD", "subscriber_id": sub, "msisdn": "13312345678",
            "account_id": "ACC-" + sub, "home_province": "GD", "payment_type": "POSTPAID",
            "plan_id": "PLAN-X", "real_name": "Test Person", "id_number": "440100199001011234",
            "broadband_account": None, "broadband_type": "NONE", "access_ne_id": None}


def rated(t, sub, amount, status="RATED"):
    return {"event_type": "RatedCdr", "cdr_id": unique("RC-"), "subscriber_id": sub,
            "service": "VOICE", "direction": "MO", "zone": "INTERNATIONAL",
            "billed_units": 60, "free_units": 0, "amount_li": amount, "plan_id": "PLAN-X",
            "plan_version": 1, "billing_period": "202611", "balance_after_li": -amount,
            "status": status, "reject_reason": None, "rated_at": t}


# ---------------------------------------------------------------------- worker
def start_worker(app_id: str, uid: str, log_dir, env=None) -> Proc:
    """A `telbus worker` running only the fraud processor, in its own consumer group."""
    proc = Proc(
        f"worker-{uid}",
        ["worker", "--loglevel", "warning"],
        env={"TELBUS_WORKER_APP_ID": app_id, "TELBUS_WORKER_ID": uid,
             "TELBUS_FRAUD_GROUP": f"{app_id}-fraud",  # not the Faust app's group
             "TELBUS_WORKER_WEB_PORT": str(free_port()), "TELBUS_RATING_IN_WORKER": "0",
             "TELBUS_ALARMS_IN_WORKER": "0", **(env or {})},
        log_dir=log_dir,
    )
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    return proc.start(ready_timeout=180)


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    uid = unique("fr")
    proc = start_worker(f"telbus-it-{uid}", uid, tmp_path_factory.mktemp("fraud-worker"))
    try:
        yield proc
    finally:
        proc.stop()


def alerts_for(subject, topic=ALERTS, dedupe=True):
    """The alerts for ``subject`` in offset order.

    Other tests of the session may run workers with the fraud processor (in its default
    group) over the same input topics: they publish the very same alerts (same alert_id,
    same content) to sec.fraud.alerts. ``dedupe`` keeps one record per alert_id, so
    "exactly one alert" means one alert_id. The restart test counts raw records on its
    own topic instead.
    """
    recs = read_topic(topic, timeout=30, predicate=lambda k, v: v["subject"] == subject)
    out, seen = [], {}
    for _p, _o, key, value in sorted(recs, key=lambda r: (r[0], r[1])):
        assert key == subject
        if dedupe and value["alert_id"] in seen:
            assert seen[value["alert_id"]] == value
            continue
        seen[value["alert_id"]] = value
        out.append(value)
    return out


def wait_alerts(subject, n, timeout=120, **kw):
    def enough():
        recs = alerts_for(subject, **kw)
        return recs if len(recs) >= n else None

    return wait_until(enough, timeout, 0.5, f"{n} alert(s) for {subject}")


# ---------------------------------------------------------------------- login rules
def test_brute_force_positive(worker):
    acc = unique("bf")
    evs = [login(T0 + i * 5 * S, acc) for i in range(5)]
    produce("sec.login.events", evs)
    [a] = wait_alerts(acc, 1)
    assert a["rule"] == "LOGIN_BRUTE_FORCE" and a["subject_type"] == "ACCOUNT"
    assert a["severity"] == "MEDIUM"
    assert a["evidence"] == {"failures": 5}
    assert (a["window_start"], a["window_end"]) == (T0, T0 + 20 * S)
    assert a["first_event_id"] == evs[0]["event_id"]


def test_brute_force_negative_then_sentinel(worker):
    acc = unique("bf")
    four = [login(T0 + i * 10 * S, acc) for i in range(4)]
    spread = [login(T0 + 20 * MIN + i * 20 * S, acc) for i in range(5)]  # 80 s: no
    other = [login(T0 + 30 * MIN + i * S, acc, result=r)
             for i, r in enumerate(["LOCKED", "SUCCESS", "UNKNOWN_ACCOUNT", "LOCKED", "SUCCESS"])]
    sentinel = [login(T0 + 40 * MIN + i * S, acc) for i in range(5)]
    produce("sec.login.events", four + spread + other + sentinel)
    [a] = wait_alerts(acc, 1)
    assert a["window_start"] == T0 + 40 * MIN and a["evidence"] == {"failures": 5}


def test_suppression_then_new_alert(worker):
    acc = unique("bf")
    burst = lambda start: [login(start + i * S, acc) for i in range(5)]  # noqa: E731
    produce("sec.login.events", burst(T0) + burst(T0 + 5 * MIN) + burst(T0 + 15 * MIN))
    alerts = wait_alerts(acc, 2)
    assert [a["window_start"] for a in alerts] == [T0, T0 + 15 * MIN]
    assert len({a["alert_id"] for a in alerts}) == 2


def test_credential_stuffing_positive(worker):
    ip = unique("ip-")  # any string: unique per test
    evs = [login(T0 + i * S, unique("victim"), ip=ip,
                 result="UNKNOWN_ACCOUNT" if i % 3 else "BAD_PASSWORD") for i in range(20)]
    produce("sec.login.events", evs)
    [a] = wait_alerts(ip, 1)
    assert a["rule"] == "CREDENTIAL_STUFFING" and a["subject_type"] == "SOURCE_IP"
    assert a["evidence"] == {"failures": 20, "distinct_accounts": 20}
    assert a["window_start"] == T0


def test_credential_stuffing_negative_then_sentinel(worker):
    ip = unique("ip-")
    accounts = [unique("victim") for _ in range(20)]
    nineteen = [login(T0 + i * S, a, ip=ip) for i, a in enumerate(accounts[:19])]
    successes = [login(T0 + 30 * S, a, ip=ip, result="SUCCESS") for a in accounts[19:]]
    sentinel = [login(T0 + 10 * MIN + i * S, a, ip=ip) for i, a in enumerate(accounts)]
    produce("sec.login.events", nineteen + successes + sentinel)
    [a] = wait_alerts(ip, 1)
    assert a["window_start"] == T0 + 10 * MIN and a["evidence"]["distinct_accounts"] == 20


def test_impossible_travel_positive(worker):
    acc = unique("tr")
    a1 = login(T0, acc, "SUCCESS", province="GD")
    a2 = login(T0 + 4 * MIN, acc, "SUCCESS", province="XJ")
    produce("sec.login.events", [a1, a2])
    [a] = wait_alerts(acc, 1)
    assert a["rule"] == "IMPOSSIBLE_TRAVEL" and a["severity"] == "HIGH"
    assert a["evidence"] == {"logins": 2, "distinct_provinces": 2}
    assert a["first_event_id"] == a1["event_id"]


def test_impossible_travel_negative_then_sentinel(worker):
    acc = unique("tr")
    same = [login(T0 + i * MIN, acc, "SUCCESS", province="GD") for i in range(3)]
    far = [login(T0 + 14 * MIN, acc, "SUCCESS", province="BJ")]  # 11 min after the last GD
    failed = [login(T0 + 15 * MIN, acc, "BAD_PASSWORD", province="SH")]
    sentinel = [login(T0 + 2 * H, acc, "SUCCESS", province="GD"),
                login(T0 + 2 * H + 9 * MIN, acc, "SUCCESS", province="SH")]
    produce("sec.login.events", same + far + failed + sentinel)
    [a] = wait_alerts(acc, 1)
    assert a["window_start"] == T0 + 2 * H


def test_bad_login_goes_to_dlq(worker):
    acc = unique("dl")
    garbage = b"\xc3\x01not-an-event-" + acc.encode()
    p = kafka.producer()
    p.produce("sec.login.events", garbage, acc)
    assert p.flush(30) == 0
    produce("sec.login.events", [login(T0 + i * S, acc) for i in range(5)])
    wait_alerts(acc, 1)

    def dead_letters():
        return read_topic("sec.login.events.dlq", decode=False,
                          predicate=lambda k, v: v == garbage)

    [(_p, _o, key, value)] = wait_until(dead_letters, 60, 0.5, "the bad login in the DLQ")
    assert key == acc


# ---------------------------------------------------------------------- CDR rules
def test_irsf_count_positive(worker):
    sub = unique("irsf")
    evs = [cdr(T0 + i * 10 * MIN, sub, called=p + "1234567", duration=120)
           for i, p in enumerate(["00881", "00882", "00870"])]
    produce("net.cdr.raw", evs)
    [a] = wait_alerts(sub, 1)
    assert a["rule"] == "IRSF" and a["subject_type"] == "SUBSCRIBER" and a["severity"] == "CRITICAL"
    assert a["evidence"] == {"calls": 3, "seconds": 360, "calls_trigger": 1, "seconds_trigger": 0}


def test_irsf_duration_positive(worker):
    sub = unique("irsf")
    produce("net.cdr.raw", [cdr(T0, sub, called="00979123", duration=1800)])
    [a] = wait_alerts(sub, 1)
    assert a["evidence"]["seconds_trigger"] == 1 and a["evidence"]["calls"] == 1


def test_irsf_negative_then_sentinel(worker):
    sub = unique("irsf")
    two = [cdr(T0 + i * 10 * MIN, sub, duration=600) for i in range(2)]      # 1200 s, 2 calls
    normal = [cdr(T0 + 25 * MIN + i * MIN, sub, called="0044201234567") for i in range(5)]
    mt = [cdr(T0 + 40 * MIN, sub, direction="MT", called="0088112345")]
    spread = [cdr(T0 + 3 * H + i * 31 * MIN, sub) for i in range(3)]         # 62 min: no
    sentinel = [cdr(T0 + 6 * H + i * MIN, sub) for i in range(3)]
    produce("net.cdr.raw", two + normal + mt + spread + sentinel)
    [a] = wait_alerts(sub, 1)
    assert a["window_start"] == T0 + 6 * H


def simbox_calls(sub, start, n=50, distinct=40, step=30 * S):
    return [cdr(start + i * step, sub, called=f"1390000{i % distinct:04d}", duration=45)
            for i in range(n)]


def test_simbox_positive(worker):
    sub = unique("sim")
    calls = simbox_calls(sub, T0)
    produce("net.cdr.raw", calls)
    [a] = wait_alerts(sub, 1)
    assert a["rule"] == "SIMBOX" and a["severity"] == "HIGH"
    assert a["evidence"] == {"calls": 50, "distinct_numbers": 40, "mt_calls": 0}
    assert a["first_event_id"] == calls[0]["event_id"]


def test_simbox_negative_then_sentinel(worker):
    sub = unique("sim")
    few_numbers = simbox_calls(sub, T0, n=60, distinct=39)
    with_mt = simbox_calls(sub, T0 + 3 * H)
    with_mt.insert(25, cdr(T0 + 3 * H + 12 * MIN + 15 * S, sub, direction="MT", called="13800000000"))
    sentinel = simbox_calls(sub, T0 + 6 * H)
    produce("net.cdr.raw", few_numbers + with_mt + sentinel)
    [a] = wait_alerts(sub, 1)
    assert a["window_start"] == T0 + 6 * H


# ---------------------------------------------------------------------- join rule
def test_new_subscriber_spend_positive(worker):
    sub = unique("new")
    c = created(T0, sub)
    produce("bss.subscriber.events", [c])
    produce("bss.cdr.rated", [rated(T0 + 2 * H, sub, 60_000), rated(T0 + 23 * H + 59 * MIN, sub, 40_000)])
    [a] = wait_alerts(sub, 1)
    assert a["rule"] == "NEW_SUBSCRIBER_SPEND" and a["severity"] == "MEDIUM"
    assert a["evidence"] == {"amount_li": 100_000, "rated_cdrs": 2}
    assert (a["window_start"], a["first_event_id"]) == (T0, c["event_id"])


def test_new_subscriber_spend_negative_then_sentinel(worker):
    sub = unique("new")
    produce("bss.subscriber.events", [created(T0, sub)])
    produce("bss.cdr.rated", [
        rated(T0 + 23 * H + 59 * MIN, sub, 99_999),
        rated(T0 + 23 * H + 59 * MIN, sub, 500_000, status="REJECTED"),
        rated(T0 + 24 * H + 10 * S, sub, 100_000),        # after the 24 h: not counted
        rated(T0 + 23 * H + 59 * MIN + 50 * S, sub, 1),   # 20 s late, inside the lateness
    ])
    [a] = wait_alerts(sub, 1)
    assert a["evidence"] == {"amount_li": 100_000, "rated_cdrs": 2}
    assert a["window_end"] == T0 + 23 * H + 59 * MIN + 50 * S


def test_established_subscriber_spend_raises_nothing(worker):
    sub = unique("old")
    produce("bss.cdr.rated", [rated(T0 + i * MIN, sub, 200_000) for i in range(3)])
    # sentinel on the same key: a creation after those spends (within the merge skew)
    # joins only what follows it
    produce("bss.subscriber.events", [created(T0 + 3 * MIN, sub)])
    produce("bss.cdr.rated", [rated(T0 + 10 * MIN, sub, 100_000)])
    [a] = wait_alerts(sub, 1)
    assert a["window_start"] == T0 + 3 * MIN and a["evidence"]["amount_li"] == 100_000


# ---------------------------------------------------------------------- restart
def test_state_survives_kill9_without_missing_or_repeating(broker, tmp_path_factory):
    uid = unique("fr")
    app_id = f"telbus-it-{uid}"
    log_dir = tmp_path_factory.mktemp("fraud-restart")
    acc, sub = unique("rs"), unique("rs")
    own = f"{app_id}-alerts"  # only this worker writes here: repeats are visible
    env = {"TELBUS_FRAUD_ALERT_TOPIC": own}
    kw = {"topic": own, "dedupe": False}
    first = start_worker(app_id, uid, log_dir, env)
    try:
        produce("net.cdr.raw", [cdr(T0 + i * MIN, sub) for i in range(2)])
        produce("sec.login.events", [login(T0 + i * S, acc) for i in range(5)])
        wait_alerts(acc, 1, **kw)
    finally:
        first.kill9()
    second = start_worker(app_id, uid, log_dir, env)
    try:
        # a 6th failure folds into the alert kept in the state (no repeat); the third
        # high-risk call completes the window begun before the kill (nothing missed)
        produce("sec.login.events", [login(T0 + 6 * S, acc)])
        produce("net.cdr.raw", [cdr(T0 + 2 * MIN, sub)])
        alerts = wait_alerts(sub, 1, **kw)
        assert len(alerts) == 1 and alerts[0]["evidence"]["calls"] == 3, alerts
        produce("sec.login.events", [login(T0 + 20 * MIN + i * S, acc) for i in range(5)])
        alerts = wait_alerts(acc, 2, **kw)
        assert [x["window_start"] for x in alerts] == [T0, T0 + 20 * MIN], alerts
        assert alerts_for(sub, **kw) == alerts_for(sub, **kw)[:1]
    finally:
        second.stop()
