"""The shell's state handling (no broker: the pure helpers of processors.fraud.agent)."""

import json
import os

_saved = os.environ.get("TELBUS_FRAUD_IN_WORKER")
os.environ["TELBUS_FRAUD_IN_WORKER"] = "0"  # no Faust service in a unit test
from processors.fraud import agent, rules  # noqa: E402

if _saved is None:
    del os.environ["TELBUS_FRAUD_IN_WORKER"]
else:
    os.environ["TELBUS_FRAUD_IN_WORKER"] = _saved

T0 = 1_763_600_000_000
S = 1000


def login(i, t, result="BAD_PASSWORD", account="acc", ip="1.1.1.1"):
    return {"event_type": "Login", "event_id": f"e{i}", "event_time": t, "source": "UAM",
            "login_id": f"l{i}", "account": account, "account_type": "MSISDN",
            "client": "ONLINE_HALL", "result": result, "source_ip": ip, "province": "GD",
            "device_id": None}


def test_apply_rules_stores_per_rule_state_and_alerts():
    record, alerts, signals = None, [], []
    for i in range(6):
        record, changed, a, sig = agent.apply_rules(record, agent.ACCOUNT_RULES,
                                                    login(i, T0 + i * S), 3)
        record = json.loads(json.dumps(record))
        alerts += a
        signals += sig
        assert changed
    assert record["p"] == 3 and set(record["s"]) == {rules.LOGIN_BRUTE_FORCE}
    assert [a["rule"] for a in alerts] == ["LOGIN_BRUTE_FORCE"]
    assert signals == ["alert_LOGIN_BRUTE_FORCE", "suppressed_LOGIN_BRUTE_FORCE"]


def test_apply_rules_unchanged_and_idle():
    # a SUCCESS login concerns travel only; a lone one is state, a SMS CDR changes nothing
    record, changed, alerts, _ = agent.apply_rules(None, agent.ACCOUNT_RULES,
                                                   login(1, T0, "SUCCESS"), 0)
    assert changed and set(record["s"]) == {rules.IMPOSSIBLE_TRAVEL}
    sms = {"event_type": "Cdr", "event_id": "c1", "event_time": T0, "source": "M",
           "cdr_id": "c1", "subscriber_id": "s1", "service": "SMS", "direction": "MO",
           "calling_number": "1", "called_number": "2", "start_time": T0, "duration_s": None,
           "bytes_up": None, "bytes_down": None, "cell_id": None, "province": "GD"}
    assert agent.apply_rules(None, agent.CDR_RULES, sms, 0) == (None, False, [], [])


def test_apply_rules_late_and_duplicate_signals():
    record = None
    for i, t in enumerate([T0 + 60 * S, T0]):
        record, _c, _a, sig = agent.apply_rules(record, agent.ACCOUNT_RULES, login(i, t), 0)
    assert sig == ["late_LOGIN_BRUTE_FORCE"]
    _r, changed, _a, sig = agent.apply_rules(record, agent.ACCOUNT_RULES, login(0, T0 + 60 * S), 0)
    assert sig == ["duplicate"] and not changed


def test_stuffing_origin_reaches_the_rule():
    record = None
    for i in range(20):
        origin = str(i % 2)
        t = T0 + (40 * S if origin == "0" else 0) + i * 100
        record, _c, alerts, sig = agent.apply_rules(record, agent.IP_RULES,
                                                    login(i, t, account=f"a{i}"), 1,
                                                    origin=origin)
    assert "late_CREDENTIAL_STUFFING" not in sig
    assert [a["rule"] for a in alerts] == ["CREDENTIAL_STUFFING"]


def test_expire_record_deletes_idle():
    record, *_ = agent.apply_rules(None, agent.ACCOUNT_RULES, login(1, T0), 2)
    assert agent.expire_record(record, T0 + 10 * S) == record
    assert agent.expire_record(record, T0 + 3600 * S) is None


def test_event_time_sweep_expires_quiet_keys_only():
    proc = agent.FraudProcessor()
    quiet, *_ = agent.apply_rules(None, agent.ACCOUNT_RULES, login(1, T0), 0)
    busy, *_ = agent.apply_rules(None, agent.ACCOUNT_RULES, login(2, T0 + 3600 * S, account="b"), 0)
    proc.states["account"][0] = {"acc": quiet, "b": busy}
    proc.watermarks[("account", 0)] = T0
    dirty, counts = {}, __import__("collections").Counter()
    proc._maybe_sweep("account", 0, dirty, counts)  # first call only sets the mark
    assert dirty == {}
    proc.watermarks[("account", 0)] = T0 + 3600 * S
    proc._maybe_sweep("account", 0, dirty, counts)
    assert dirty == {("account", 0, "acc"): None}
    assert set(proc.states["account"][0]) == {"b"}
    assert counts[("expired_keys", None)] == 1
