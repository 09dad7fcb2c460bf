"""Read-only SQL: statement check, engine-enforced readonly, endpoint, formats, run_query."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sinks import queryserver as qs
from sinks.queryserver import QueryError, QueryServer, check_statement, execute, format_result
from sinks.store import Store


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  select 1;", "WITH 1 AS x SELECT x", "SHOW TABLES", "DESCRIBE TABLE net_cdr_raw",
    "DESC net_cdr_raw", "EXPLAIN SELECT 1", "(SELECT 1)", "-- note\nSELECT 1", "/* c */ SELECT 'a;b'",
    "EXISTS TABLE net_cdr_raw",
])
def test_allowed_statements(sql):
    check_statement(sql)


@pytest.mark.parametrize("sql, kind", [
    ("INSERT INTO t VALUES (1)", "forbidden"),
    ("DROP TABLE net_cdr_raw", "forbidden"),
    ("ALTER TABLE t DELETE WHERE 1", "forbidden"),
    ("TRUNCATE TABLE t", "forbidden"),
    ("SET readonly = 0", "forbidden"),
    ("SYSTEM SHUTDOWN", "forbidden"),
    ("SELECT 1; DROP TABLE t", "forbidden"),
    ("/* x */ DROP TABLE t", "forbidden"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "forbidden"),
    ("SELECT * FROM url('http://example.com/x', 'CSV')", "forbidden"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "forbidden"),
    ("SELEC 1", "bad_sql"),
    ("", "bad_sql"),
])
def test_refused_statements(sql, kind):
    with pytest.raises(QueryError) as ei:
        check_statement(sql)
    assert ei.value.kind == kind


@pytest.fixture
def store(tmp_path):
    s = Store(f"chdb://{tmp_path / 'ch'}")
    yield s
    s.close()


def test_engine_refuses_writes_even_past_the_statement_check(store, monkeypatch):
    client = qs.readonly_client(store.dsn, 100)
    try:
        monkeypatch.setattr(qs, "check_statement", lambda sql: sql)     # simulate a check bypass
        with pytest.raises(QueryError) as ei:
            execute(client, "INSERT INTO net_cdr_raw (cdr_id) VALUES ('x')", 10)
        assert ei.value.kind == "forbidden"
        with pytest.raises(QueryError):
            execute(client, "SELECT * FROM file('/etc/passwd', 'LineAsString')", 10)
        with pytest.raises(QueryError):
            execute(client, "CREATE TABLE z (a Int8) ENGINE = Memory", 10)
    finally:
        client.close()
    assert store.client.query("EXISTS TABLE z").result_rows == [(0,)]


def test_row_limit_bad_sql_and_empty_result_header(store):
    client = qs.readonly_client(store.dsn, 1000)
    try:
        res = execute(client, "SELECT number AS n FROM numbers(100000)", 7)
        assert res["row_count"] == 7 and res["truncated"] and res["rows"][0] == [0]
        res = execute(client, "SELECT * FROM v_daily_revenue", 10)
        assert res["rows"] == [] and res["columns"] == ["day", "province", "plan_id", "revenue_li", "rated_cdrs"]
        with pytest.raises(QueryError) as ei:
            execute(client, "SELECT nope FROM net_cdr_raw", 10)
        assert ei.value.kind == "bad_sql" and "nope" in str(ei.value)
        with pytest.raises(QueryError) as ei:
            execute(client, "SELECT 1", 0)
        assert ei.value.kind == "limit"
    finally:
        client.close()


def test_formats():
    res = {"columns": ["name", "n", "xs"], "types": [], "rows": [["a", 1, ["x"]], ["广东", 22, None]],
           "row_count": 2, "truncated": False}
    table = format_result(res, "table")
    lines = table.splitlines()
    assert lines[0].split() == ["name", "n", "xs"]
    assert lines[2].startswith("a") and lines[2].split() == ["a", "1", '["x"]']
    assert lines[3].split() == ["广东", "22", "NULL"]
    assert lines[-1] == "(2 rows)"
    assert json.loads(format_result(res, "json")) == [{"name": "a", "n": 1, "xs": ["x"]},
                                                       {"name": "广东", "n": 22, "xs": None}]
    assert format_result(res, "csv") == 'name,n,xs\na,1,"[""x""]"\n广东,22,NULL\n'


def _post(url, sql, token=None, limit=None):
    req = urllib.request.Request(url + "/query", data=json.dumps({"sql": sql, "limit": limit}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_endpoint_serves_read_only_sql_with_token(store, tmp_path):
    srv = QueryServer(store.dsn, host="127.0.0.1", port=0, token="s3cret", row_limit=50, run_dir=tmp_path / "run")
    url = srv.start()
    try:
        assert (tmp_path / "run" / "query.url").read_text().strip() == url
        assert url.startswith("http://127.0.0.1:")
        assert _post(url, "SELECT 1")[0] == 401
        assert _post(url, "SELECT 1", token="wrong")[0] == 401
        status, body = _post(url, "SELECT number FROM numbers(1000)", token="s3cret")
        assert status == 200 and body["row_count"] == 50 and body["truncated"]
        status, body = _post(url, "SELECT number FROM numbers(1000)", token="s3cret", limit=3)
        assert body["rows"] == [[0], [1], [2]]
        status, body = _post(url, "DROP TABLE net_cdr_raw", token="s3cret")
        assert status == 400 and body["kind"] == "forbidden"
        status, body = _post(url, "SELECT FROM WHERE", token="s3cret")
        assert status == 400 and body["kind"] == "bad_sql" and body["error"]
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert json.loads(r.read())["ok"]
    finally:
        srv.stop()
    assert not (tmp_path / "run" / "query.url").exists()


def test_non_loopback_bind_requires_a_token(store):
    with pytest.raises(RuntimeError, match="TELBUS_QUERY_TOKEN"):
        QueryServer(store.dsn, host="0.0.0.0", token="")


def test_run_query_goes_through_the_endpoint_when_the_owner_runs(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TELBUS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TELBUS_QUERY_TOKEN", raising=False)
    srv = QueryServer(store.dsn, host="127.0.0.1", port=0, run_dir=tmp_path / "run")
    srv.start()
    try:
        res = qs.query_result("SELECT count() AS n FROM net_cdr_raw", dsn=store.dsn)
        assert res["via"] == "endpoint" and res["rows"] == [[0]]
        with pytest.raises(QueryError) as ei:
            qs.query_result("DELETE FROM net_cdr_raw WHERE 1", dsn=store.dsn)
        assert ei.value.kind == "forbidden"
        out = qs.run_query("SELECT 1 AS one", fmt="csv", dsn=store.dsn)
        assert out == "one\n1\n"
    finally:
        srv.stop()


def test_run_query_opens_the_store_directly_when_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TELBUS_DATA_DIR", str(tmp_path))
    dsn = f"chdb://{tmp_path / 'fresh'}"
    # a stale URL file (sink killed) must not stop the query
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "query.url").write_text("http://127.0.0.1:9\n")
    res = qs.query_result("SELECT name FROM system.tables WHERE database = currentDatabase() "
                          "AND name = 'v_daily_revenue'", dsn=dsn)
    assert res["via"] == "direct" and res["rows"] == [["v_daily_revenue"]]
