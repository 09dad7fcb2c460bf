"""Exactly once under kill -9, and state rebuilt from the log by a worker without local state.

Expected values come from a straight in-process run of the pure rules over the same
events in the same order (each subscriber's CDRs are in one partition, so their order is
the production order; subscriber events are settled before any CDR is published).
"""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime

import pytest

from processors.rating import rules
from telbus import config
from telbus.localbroker import free_port
from tests.helpers import Proc, kill9_while_progressing, produce, produce_in_background, read_topic, unique
from tests.integration.test_rating_golden import created, settle, sub_event, tariff

pytestmark = pytest.mark.integration


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


T0 = ms("2026-11-20T08:00:00+08:00")


def start_worker(name: str, worker_id: str, log_dir, data_dir=None) -> Proc:
    env = {"TELBUS_WORKER_APP_ID": f"telbus-it-{worker_id}", "TELBUS_WORKER_ID": worker_id,
           "TELBUS_WORKER_WEB_PORT": str(free_port())}
    if data_dir is not None:
        env["TELBUS_DATA_DIR"] = str(data_dir)
    p = Proc(name, ["worker", "--loglevel", "warning"], env=env, log_dir=log_dir)
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        (data_dir / "worker").mkdir(parents=True, exist_ok=True)
        (data_dir / "run").mkdir(parents=True, exist_ok=True)
        # Proc reads readiness from this process's run dir
        p._data_dir = data_dir
    return p


def start(p: Proc) -> Proc:
    if getattr(p, "_data_dir", None) is not None:
        import os
        old = os.environ.get("TELBUS_DATA_DIR")
        os.environ["TELBUS_DATA_DIR"] = str(p._data_dir)
        try:
            return p.start(ready_timeout=180)
        finally:
            os.environ["TELBUS_DATA_DIR"] = old
    return p.start(ready_timeout=180)


def spawn(p: Proc) -> Proc:
    """Start without waiting for Faust's readiness: the rating loop runs on its own thread
    and consumer group (static membership), so it is back long before Faust's own group
    has timed out the killed member."""
    import subprocess

    from tests.helpers import ROOT, TELBUS

    p.log_path.parent.mkdir(parents=True, exist_ok=True)
    p.proc = subprocess.Popen([TELBUS, *p.argv], stdout=open(p.log_path, "ab"), stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=p.env, cwd=str(ROOT), start_new_session=True)
    return p


def committed_cdrs() -> int:
    from confluent_kafka import TopicPartition

    from telbus import kafka
    from tests.helpers import end_offsets

    c = kafka.consumer("telbus-rating")
    try:
        tps = [TopicPartition("net.cdr.raw", p) for p in end_offsets("net.cdr.raw")]
        return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=5))
    except Exception:  # offsets pending in an open transaction: not stable yet
        return -1
    finally:
        c.close()


def workload(u: str, n_subs: int, n_cdrs: int, seed: int):
    rnd = random.Random(seed)
    plan_id = f"K{u}"
    plan = tariff(plan_id, 1, ms("2026-01-01T00:00:00+08:00"), dom=120, intl=1800, inc=6, free_min=5,
                  sms_dom=100, sms_intl=1000, free_sms=3, li_per_mb=3000, free_mb=1, credit_limit_li=2000)
    subs = [f"S{u}-{i}" for i in range(n_subs)]
    sub_events = []
    for i, s in enumerate(subs):
        sub_events.append(created(s, plan_id, ms("2026-11-01T00:00:00+08:00")))
        sub_events.append(sub_event("BalanceRecharged", s, T0 - 3_600_000, f"r-{s}", amount_li=5000 + 1000 * i,
                                    channel="APP"))
    cdrs = []
    for k in range(n_cdrs):
        s = subs[rnd.randrange(n_subs)]
        service = rnd.choice(["VOICE", "VOICE", "SMS", "DATA"])
        t = T0 + k * 1000
        cdr_id = f"{s}-c{k}"
        if k > 10 and rnd.random() < 0.03:   # a mediation retry of an earlier CDR of the same subscriber
            prev = [c for c in cdrs if c["subscriber_id"] == s]
            if prev:
                c = dict(prev[-1])
                c["event_id"] = c["event_id"] + "-retry"
                c["event_time"] = t
                cdrs.append(c)
                continue
        c = {"event_type": "Cdr", "event_id": f"ev-{cdr_id}", "event_time": t, "source": "MEDIATION",
             "cdr_id": cdr_id, "subscriber_id": s, "service": service, "direction": rnd.choice(["MO", "MO", "MT"]),
             "calling_number": "18900000000",
             "called_number": None if service == "DATA" else rnd.choice(["13800138000", "0044201234", "008613800"]),
             "start_time": t, "duration_s": rnd.randrange(0, 400) if service == "VOICE" else None,
             "bytes_up": rnd.randrange(0, 300_000) if service == "DATA" else None,
             "bytes_down": rnd.randrange(0, 900_000) if service == "DATA" else None,
             "cell_id": None, "province": "GD"}
        cdrs.append(c)
    return plan, subs, sub_events, cdrs


def straight_run(plan, sub_events, cdrs):
    cat: dict = {}
    assert rules.catalog_add(cat, plan) is None
    states: dict = {}
    rated, credit = [], []
    for e in sub_events:
        states[e["subscriber_id"]], outs = rules.apply_subscriber_event(states.get(e["subscriber_id"]), e, cat)
        credit.extend(outs)
    for c in cdrs:
        states[c["subscriber_id"]], outs = rules.rate_cdr(states.get(c["subscriber_id"]), c, cat)
        rated.extend(o for o in outs if o["event_type"] == "RatedCdr")
        credit.extend(o for o in outs if o["event_type"] == "CreditControl")
    return rated, credit, {s: st["balance_li"] for s, st in states.items()}


def live(subs):
    subs = set(subs)
    rated = [v for _, _, k, v in read_topic("bss.cdr.rated", timeout=30, predicate=lambda k, v: k in subs)]
    credit = [v for _, _, k, v in read_topic("ocs.credit.control", timeout=30, predicate=lambda k, v: k in subs)]
    return rated, credit


def assert_same(rated, credit, exp_rated, exp_credit, exp_balances):
    occurrences = Counter((r["cdr_id"], r["status"]) for r in rated)
    expected = Counter((r["cdr_id"], r["status"]) for r in exp_rated)
    assert occurrences == expected, "every CDR exactly once (retries as DUPLICATE)"
    assert len(rated) == len(exp_rated)
    by_sub = {}
    for r in rated:
        by_sub.setdefault(r["subscriber_id"], []).append(r)
    exp_by_sub = {}
    for r in exp_rated:
        exp_by_sub.setdefault(r["subscriber_id"], []).append(r)
    assert by_sub == exp_by_sub
    assert {s: rs[-1]["balance_after_li"] for s, rs in by_sub.items()} == \
        {s: b for s, b in exp_balances.items() if s in by_sub}
    key = lambda c: (c["subscriber_id"], c["cause_event_id"], c["action"])  # noqa: E731
    assert sorted(credit, key=key) == sorted(exp_credit, key=key)


@pytest.mark.slow
def test_kill_9_while_cdrs_stream_in_rates_every_cdr_once(broker, tmp_path):
    u = unique("x")
    plan, subs, sub_events, cdrs = workload(u, n_subs=12, n_cdrs=1500, seed=7)
    exp_rated, exp_credit, exp_bal = straight_run(plan, sub_events, cdrs)
    assert any(c["action"] == "SUSPEND" for c in exp_credit)
    assert any(r["status"] == "DUPLICATE" for r in exp_rated)

    produce("bss.tariff.plans", [plan])
    produce("bss.subscriber.events", sub_events)
    wid = unique("k")
    procs = [start(start_worker(f"worker-{wid}", wid, tmp_path))]
    try:
        settle("bss.tariff.plans", "bss.subscriber.events")
        feeder = produce_in_background("net.cdr.raw", cdrs, chunk=25)
        kill9_while_progressing(procs, committed_cdrs, lambda: spawn(start_worker(f"worker-{wid}", wid, tmp_path)))
        feeder.join(120)
        assert len(procs) == 4
        settle("net.cdr.raw")
        rated, credit = live(subs)
        assert_same(rated, credit, exp_rated, exp_credit, exp_bal)
    finally:
        procs[-1].stop()


def test_worker_without_local_state_rebuilds_from_the_log(broker, tmp_path):
    u = unique("rb")
    plan, subs, sub_events, cdrs = workload(u, n_subs=4, n_cdrs=300, seed=3)
    exp_rated, exp_credit, exp_bal = straight_run(plan, sub_events, cdrs)
    produce("bss.tariff.plans", [plan])
    produce("bss.subscriber.events", sub_events)
    first, second = cdrs[:150], cdrs[150:]

    wid1 = unique("w1")
    w1 = start(start_worker(f"worker-{wid1}", wid1, tmp_path / "one"))
    try:
        settle("bss.tariff.plans", "bss.subscriber.events")
        produce("net.cdr.raw", first)
        settle("net.cdr.raw")
    finally:
        w1.stop()
    # another worker, another machine: an empty data directory, nothing local to reuse
    wid2 = unique("w2")
    fresh = tmp_path / "fresh-data"
    fresh.mkdir()
    w2 = start(start_worker(f"worker-{wid2}", wid2, tmp_path / "two", data_dir=fresh))
    try:
        produce("net.cdr.raw", second)
        settle("net.cdr.raw")
        rated, credit = live(subs)
        assert_same(rated, credit, exp_rated, exp_credit, exp_bal)
    finally:
        w2.stop()
