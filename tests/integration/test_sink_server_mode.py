"""The store in server mode (an ``http://`` DSN): sink, ``telbus query``, and the store
killed while the sink writes.

The server is ClickHouse's own HTTP interface on loopback (:mod:`sinks.localserver`, the
engine chDB embeds, in a process of its own): the sink and the CLI reach it with
clickhouse-connect over HTTP exactly as they would reach clickhouse-server.
"""
from __future__ import annotations

import pytest

from tests.helpers import Proc, cli, metric, produce_in_background, unique, wait_until
from tests.integration.test_sink_kafka import (DAY1, cdr, check_query_cli, publish_twenty_cdrs_and_garbage,
                                             rated, sink_env)

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path, monkeypatch):
    from sinks.localserver import LocalClickHouse

    s = LocalClickHouse(tmp_path / "clickhouse")
    s.start()
    monkeypatch.setenv("TELBUS_CLICKHOUSE_DSN", s.dsn)
    yield s
    s.stop()


def q(sql):
    from sinks.queryserver import query_result

    return query_result(sql, limit=100_000)["rows"]


def test_sink_and_query_against_a_server(broker, data_dir, server):
    sub, plan = publish_twenty_cdrs_and_garbage(unique("SRV"))
    proc = Proc("sink", ["sink"], env={**sink_env(unique("g-")), "TELBUS_CLICKHOUSE_DSN": server.dsn}).start()
    try:
        assert "query" not in proc.endpoints()       # a server is queried directly by everyone
        wait_until(lambda: q(f"SELECT count() FROM bss_cdr_rated FINAL WHERE plan_id = '{plan}'") == [[20]]
                   and q(f"SELECT count() FROM net_cdr_raw FINAL WHERE subscriber_id = '{sub}'") == [[20]],
                   60, 0.5, "rows stored in the server")
        check_query_cli(plan)           # while the sink runs, straight to the server
        limited = cli("query", f"SELECT cdr_id FROM net_cdr_raw WHERE subscriber_id = '{sub}'", "--limit", "5",
                      "--format", "csv")
        assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 6 and "truncated" in limited.stderr
        assert metric(proc.endpoints()["metrics"], "telbus_sink_store_up") == 1
    finally:
        proc.stop()
    assert server.alive()                            # the sink stopping leaves the server alone
    res = cli("query", f"SELECT count() AS n FROM net_cdr_raw WHERE subscriber_id = '{sub}'", "--format", "json",
              check=True)
    assert res.stdout.strip() == '[{"n": 20}]'
    audit = cli("audit", "sink", "--topic", "net.cdr.raw", "--topic", "bss.cdr.rated")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_server_killed_while_the_sink_writes_then_back(broker, data_dir, server):
    """kill -9 of the store mid-stream: the sink backs off and retries (visible in its
    metrics), stays in its group, and once the server is back every record is stored once,
    views included, without FINAL."""
    from sinks import views
    from sinks.store import connect

    tag = unique("OUT")
    plan = f"{tag}-P"
    n = 6000
    raws = [cdr(f"{tag}-c{i}", f"{tag}-S{i % 30}", DAY1 + i) for i in range(n)]
    rateds = [rated(f"{tag}-c{i}", f"{tag}-S{i % 30}", DAY1 + i, 10 + i % 7, plan) for i in range(n)]
    proc = Proc("sink", ["sink"], env={**sink_env(unique("g-")), "TELBUS_CLICKHOUSE_DSN": server.dsn,
                                       "TELBUS_LOG_LEVEL": "INFO"}).start()
    try:
        metrics = proc.endpoints()["metrics"]
        feeds = [produce_in_background("net.cdr.raw", raws, chunk=100, pause_s=0.05),
                 produce_in_background("bss.cdr.rated", rateds, chunk=100, pause_s=0.05)]
        count_sql = f"SELECT count() FROM bss_cdr_rated WHERE plan_id = '{plan}'"
        wait_until(lambda: q(count_sql)[0][0] > 0, 60, 0.1, "sink writing to the server")
        server.kill()
        wait_until(lambda: metric(metrics, "telbus_sink_insert_retries_total") >= 4
                   and metric(metrics, "telbus_sink_store_up") == 0, 60, 0.2, "sink retrying while the store is down")
        assert proc.proc.poll() is None               # backing off, not crashed
        server.start()
        for f in feeds:
            f.join(120)
        wait_until(lambda: q(count_sql) == [[n]]
                   and q(f"SELECT count() FROM net_cdr_raw WHERE cdr_id LIKE '{tag}-%'") == [[n]],
                   120, 0.5, "every record stored after the outage")
        assert metric(metrics, "telbus_sink_store_up") == 1
        failures = metric(metrics, "telbus_sink_insert_failures_total")
        assert failures >= 4, failures
    finally:
        proc.stop()
    # exactly once without FINAL: no retried insert stored a row twice
    assert q(f"SELECT count(), uniqExact(cdr_id) FROM bss_cdr_rated WHERE plan_id = '{plan}'") == [[n, n]]
    assert q(f"SELECT sum(revenue_li) FROM v_daily_revenue WHERE plan_id = '{plan}'") == [
        [sum(10 + i % 7 for i in range(n))]]
    client = connect(server.dsn)
    try:
        assert {v: r["ok"] for v, r in views.audit(client).items()} == {v: True for v in views.audit(client)}
    finally:
        client.close()
