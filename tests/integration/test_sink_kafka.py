"""The sink against a real broker: end to end, dead letters, query while running, kill -9."""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import Proc, cli, produce, read_topic, unique, wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))
DAY1 = int(datetime(2026, 11, 20, 10, 0, tzinfo=CST).timestamp() * 1000)


def cdr(cdr_id, sub, start, province="GD"):
    return {"event_type": "Cdr", "event_id": "e-" + cdr_id, "event_time": start, "source": "MEDIATION",
            "cdr_id": cdr_id, "subscriber_id": sub, "service": "VOICE", "direction": "MO",
            "calling_number": "13300000001", "called_number": "13300000002", "start_time": start,
            "duration_s": 60, "bytes_up": None, "bytes_down": None, "cell_id": None, "province": province}


def rated(cdr_id, sub, start, amount, plan, units=60):
    return {"event_type": "RatedCdr", "cdr_id": cdr_id, "subscriber_id": sub, "service": "VOICE",
            "direction": "MO", "zone": "DOMESTIC", "billed_units": units, "free_units": 0,
            "amount_li": amount, "plan_id": plan, "plan_version": 1, "billing_period": "202611",
            "balance_after_li": 0, "status": "RATED", "reject_reason": None, "rated_at": start}


def q(sql):
    from sinks.queryserver import query_result

    return query_result(sql, limit=100_000)["rows"]


def sink_env(group):
    return {"TELBUS_SINK_GROUP": group, "TELBUS_SINK_BATCH_MS": "100", "TELBUS_SINK_BATCH_ROWS": "1000",
            "TELBUS_PII_KEY": "it-key", "TELBUS_LOG_LEVEL": "WARNING"}


def _dlq_records(topic, key):
    from confluent_kafka import TopicPartition

    from telbus import kafka

    out = []
    c = kafka.consumer(None)
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts if ends[p] > 0])
        deadline = time.monotonic() + 20
        seen = {p: 0 for p in parts}
        while time.monotonic() < deadline and any(seen[p] < ends[p] for p in parts):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            seen[m.partition()] = m.offset() + 1
            if m.key() == key.encode():
                out.append((m.value(), dict((k, v.decode()) for k, v in m.headers() or [])))
        return out
    finally:
        c.close()


def publish_twenty_cdrs_and_garbage(tag: str) -> tuple[str, str]:
    """20 CDRs of one subscriber, their RatedCdrs (100 li each on one plan), and a record
    no codec can read; returns (subscriber, plan)."""
    from telbus import kafka

    sub, plan = f"{tag}-S1", f"{tag}-P"
    produce("net.cdr.raw", [cdr(f"{tag}-c{i}", sub, DAY1 + i) for i in range(20)])
    produce("bss.cdr.rated", [rated(f"{tag}-c{i}", sub, DAY1 + i, 100, plan) for i in range(20)])
    p = kafka.producer()
    p.produce("net.cdr.raw", b"\xc3\x01garbage-bytes", sub)
    assert p.flush(30) == 0
    return sub, plan


def check_query_cli(plan: str) -> None:
    """``telbus query``: the plan's revenue as CSV, a write refused, bad SQL as a JSON error."""
    res = cli("query", f"SELECT revenue_li FROM v_daily_revenue WHERE plan_id = '{plan}'", "--format", "csv",
              check=True)
    assert res.stdout == "revenue_li\n2000\n"
    bad = cli("query", "DROP TABLE net_cdr_raw")
    assert bad.returncode == 2 and "forbidden" in bad.stderr
    bad = cli("query", "SELECT nope FROM net_cdr_raw", "--format", "json")
    assert bad.returncode == 2 and '"kind": "bad_sql"' in bad.stderr


def test_sink_end_to_end_with_dead_letters_and_query_while_running(broker, data_dir):
    # a record no codec can read must reach net.cdr.raw.dlq untouched, not stop the sink
    tag = unique("E2E")
    sub, plan = publish_twenty_cdrs_and_garbage(tag)
    produce("bss.subscriber.events", [{
        "event_type": "SubscriberCreated", "event_id": f"{tag}-e", "event_time": DAY1, "source": "CRM-GD",
        "subscriber_id": sub, "msisdn": "13300000001", "account_id": "A1", "home_province": "GD",
        "payment_type": "PREPAID", "plan_id": plan, "real_name": "李四", "id_number": "440106199001019999",
        "broadband_account": None, "broadband_type": "NONE", "access_ne_id": None}])

    proc = Proc("sink", ["sink"], env=sink_env(unique("g-"))).start()
    try:
        wait_until(lambda: q(f"SELECT count() FROM net_cdr_raw FINAL WHERE subscriber_id = '{sub}'") == [[20]]
                   and q(f"SELECT count() FROM bss_cdr_rated FINAL WHERE subscriber_id = '{sub}'") == [[20]],
                   60, 0.5, "rows stored")
        check_query_cli(plan)           # while the sink owns the store (through its endpoint)
        rows = q(f"SELECT real_name_hmac, id_number_hmac FROM bss_subscriber_events FINAL "
                 f"WHERE subscriber_id = '{sub}'")
        from sinks.pii import hash_value

        assert rows == [[hash_value("李四", b"it-key"), hash_value("440106199001019999", b"it-key")]]
        dl = wait_until(lambda: _dlq_records("net.cdr.raw.dlq", sub), 30, 0.5, "dead letter")
        value, headers = dl[0]
        assert value == b"\xc3\x01garbage-bytes"
        assert headers["telbus.stage"] == "sink" and headers["telbus.original.topic"] == "net.cdr.raw"
        assert "undecodable" in headers["telbus.error"]
        metrics_url = proc.endpoints()["metrics"]
        import urllib.request

        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        assert 'telbus_sink_rows_inserted_total{table="net_cdr_raw"}' in text
        assert "telbus_dlq_records_total" in text
    finally:
        proc.stop()
    # stopped: the same query opens the store directly
    res = cli("query", f"SELECT count() AS n FROM net_cdr_raw WHERE subscriber_id = '{sub}'", "--format", "json",
              check=True)
    assert res.stdout.strip() == '[{"n": 20}]'
    audit = cli("audit", "sink", "--topic", "net.cdr.raw", "--topic", "bss.cdr.rated")
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.slow
def test_kill9_repeatedly_then_each_record_exactly_once(broker, data_dir):
    import threading

    rnd = random.Random(42)
    tag = unique("K9")
    plan = f"{tag}-P"
    subs = [f"{tag}-S{i}" for i in range(40)]
    min_chunks, max_chunks, per_chunk = 40, 200, 600
    expected_amount: dict[str, int] = {}
    expected_units: dict[str, int] = {}
    produced = [0]
    enough = threading.Event()   # set once the kills below happened while records flowed

    def producer():
        # Feeds at least min_chunks, and goes on (bounded) until the kill loop has had its
        # mid-stream kills: a slow machine must not turn the scenario into a quiet one.
        for k in range(max_chunks):
            if k >= min_chunks and enough.is_set():
                break
            raws, rateds = [], []
            for i in range(per_chunk):
                n = k * per_chunk + i
                s = subs[n % len(subs)]
                cid = f"{tag}-c{n}"
                amount, units = 10 + n % 7, 6 * (1 + n % 10)
                raws.append(cdr(cid, s, DAY1 + n))
                rateds.append(rated(cid, s, DAY1 + n, amount, plan, units))
                expected_amount[s] = expected_amount.get(s, 0) + amount
                expected_units[s] = expected_units.get(s, 0) + units
            produce("net.cdr.raw", raws)
            produce("bss.cdr.rated", rateds)
            produced[0] += per_chunk
            time.sleep(0.15)

    feeder = threading.Thread(target=producer, daemon=True)
    feeder.start()
    env = sink_env(unique("g-"))
    kills = mid_stream = 0
    proc = None
    try:
        count_sql = f"SELECT count() FROM bss_cdr_rated WHERE plan_id = '{plan}'"
        before = 0
        while feeder.is_alive() or kills < 3:
            proc = Proc("sink", ["sink"], env=env).start()
            # once this run is inserting (group joined), kill it at a random moment
            wait_until(lambda: q(count_sql)[0][0] > before or not feeder.is_alive(), 60, 0.05, "inserting")
            time.sleep(rnd.uniform(0.0, 0.5))
            flowing = feeder.is_alive()
            proc.kill9()
            kills += 1
            after = q(count_sql)[0][0]          # the store is free again: how far did it get
            mid_stream += flowing and before < after
            before = after
            if kills >= 3 and mid_stream >= 2:
                enough.set()
        enough.set()
        feeder.join()
        sent = produced[0]
        proc = Proc("sink", ["sink"], env=env).start()
        wait_until(lambda: q(f"SELECT count() FROM bss_cdr_rated FINAL WHERE plan_id = '{plan}'") == [[sent]]
                   and q(f"SELECT count() FROM net_cdr_raw FINAL WHERE cdr_id LIKE '{tag}-%'") == [[sent]],
                   180, 1.0, "all records stored")
        proc.stop()
    finally:
        if proc is not None:
            proc.kill9()
    assert sent >= min_chunks * per_chunk and sent % per_chunk == 0
    assert kills >= 3 and mid_stream >= 2, (kills, mid_stream)
    in_kafka = len(read_topic("bss.cdr.rated", timeout=60, decode=True,
                              predicate=lambda key, v: v.get("plan_id") == plan))
    assert in_kafka == sent
    # without FINAL: the fence kept every duplicate out (nothing for a merge to undo)
    assert q(f"SELECT count() FROM bss_cdr_rated WHERE plan_id = '{plan}'") == [[sent]]
    assert q(f"SELECT count() FROM net_cdr_raw WHERE cdr_id LIKE '{tag}-%'") == [[sent]]
    # the views fed by materialized views counted every record once
    usage = {r[0]: (r[1], r[2]) for r in q(
        f"SELECT subscriber_id, amount_li, voice_seconds FROM v_monthly_usage WHERE subscriber_id LIKE '{tag}-%'")}
    assert usage == {s: (expected_amount[s], expected_units[s]) for s in subs}
    revenue = q(f"SELECT sum(revenue_li), sum(rated_cdrs) FROM v_daily_revenue WHERE plan_id = '{plan}'")
    assert revenue == [[sum(expected_amount.values()), sent]]
    assert q(f"SELECT DISTINCT province FROM v_daily_revenue WHERE plan_id = '{plan}'") == [["GD"]]
    from sinks import views
    from sinks.audit import EndpointClient

    # The store also holds every other test's records on the shared broker; the views this
    # test's records feed must agree with their recomputation (the others are audited by
    # test_sink_end_to_end and views' unit tests on data of their own).
    audit = views.audit(EndpointClient())
    mine = {v: audit[v] for v in ("v_daily_revenue", "v_monthly_usage")}
    assert all(r["ok"] for r in mine.values()), mine
