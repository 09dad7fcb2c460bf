"""Store, migrations, PII, offset fence and views on a real chDB store in a temp dir."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from sinks import ddl, migrations, views
from sinks.pii import Hasher, hash_value, load_key
from sinks.store import Store
from sinks.writer import Writer

CST = timezone(timedelta(hours=8))
DAY1 = int(datetime(2026, 11, 20, 10, 0, tzinfo=CST).timestamp() * 1000)
DAY2 = int(datetime(2026, 11, 21, 23, 30, tzinfo=CST).timestamp() * 1000)
KEY = b"test-pii-key"


@pytest.fixture
def store(tmp_path):
    s = Store(f"chdb://{tmp_path / 'ch'}")
    yield s
    s.close()


@pytest.fixture
def writer(store):
    return Writer(store, Hasher(KEY))


def q(store, sql):
    return store.client.query(sql).result_rows


def cdr(cdr_id, province, start, sub="S1", service="VOICE"):
    return {"event_type": "Cdr", "event_id": "e-" + cdr_id, "event_time": start, "source": "MEDIATION",
            "cdr_id": cdr_id, "subscriber_id": sub, "service": service, "direction": "MO",
            "calling_number": "13300000001", "called_number": "13300000002", "start_time": start,
            "duration_s": 60 if service == "VOICE" else None, "bytes_up": None, "bytes_down": None,
            "cell_id": None, "province": province}


def rated(cdr_id, amount, plan, start, status="RATED", sub="S1", service="VOICE", units=60):
    return {"event_type": "RatedCdr", "cdr_id": cdr_id, "subscriber_id": sub, "service": service,
            "direction": "MO", "zone": "DOMESTIC", "billed_units": units, "free_units": 0,
            "amount_li": amount, "plan_id": plan, "plan_version": 1 if plan else None,
            "billing_period": "202611", "balance_after_li": -amount, "status": status,
            "reject_reason": None if status == "RATED" else status, "rated_at": start}


class Feeder:
    """Adds events with increasing offsets per topic (partition 0 unless told)."""

    def __init__(self, writer):
        self.w = writer
        self.next = {}

    def add(self, topic, *events, partition=0):
        for e in events:
            o = self.next.get((topic, partition), 0)
            self.next[(topic, partition)] = o + 1
            self.w.add(topic, e, partition, o, 1_700_000_000_000 + o)

    def flush(self):
        return self.w.flush()


# -- migrations ----------------------------------------------------------------------

def test_migrations_are_recorded_and_idempotent(store):
    recs = migrations.applied(store.client)
    assert [(r["kind"], r["version"]) for r in recs] == [("explicit", 1), ("explicit", 2), ("explicit", 3)]
    assert migrations.migrate(store.client, store.tables) == []
    tables = {r[0] for r in q(store, "SHOW TABLES")}
    for t in store.tables.values():
        assert t.name in tables
    assert {"v_daily_revenue", "v_monthly_usage", "v_fraud_alerts_daily", "v_open_incidents",
            "v_subscription_state", "_telbus_migrations"} <= tables


def test_schema_gaining_an_optional_field_adds_a_column_without_losing_data(tmp_path, writer, store):
    f = Feeder(writer)
    f.add("net.cdr.raw", cdr("c1", "GD", DAY1), cdr("c2", "BJ", DAY1))
    f.flush()
    schemas = ddl.load_schemas()
    evolved = copy.deepcopy(schemas)
    evolved["Cdr"]["fields"].append({"name": "roaming_country", "type": ["null", "string"], "default": None})
    tables = ddl.build_tables(evolved)
    log = migrations.migrate(store.client, tables)
    assert log == ["schema 1: add column net_cdr_raw.roaming_country"]
    cols = migrations.existing_columns(store.client, "net_cdr_raw")
    assert cols["roaming_country"] == "Nullable(String)"
    assert list(cols).index("roaming_country") == list(cols).index("province") + 1
    assert q(store, "SELECT cdr_id, province, roaming_country FROM net_cdr_raw ORDER BY cdr_id") == [
        ("c1", "GD", None), ("c2", "BJ", None)]
    # the new field is written by a writer on the evolved tables
    store.tables = tables
    w2 = Writer(store, Hasher(KEY))
    e = cdr("c3", "SH", DAY1)
    e["roaming_country"] = "FR"
    w2.add("net.cdr.raw", e, 0, 2, 0)
    w2.flush()
    assert q(store, "SELECT roaming_country FROM net_cdr_raw WHERE cdr_id = 'c3'") == [("FR",)]
    assert migrations.migrate(store.client, tables) == []
    recs = migrations.applied(store.client)
    assert ("schema", 1, "add column net_cdr_raw.roaming_country") in [
        (r["kind"], r["version"], r["name"]) for r in recs]


def test_incompatible_type_change_is_refused(store):
    schemas = copy.deepcopy(ddl.load_schemas())
    for fld in schemas["Cdr"]["fields"]:
        if fld["name"] == "province":
            fld["type"] = "long"
    with pytest.raises(migrations.MigrationError, match="net_cdr_raw.province"):
        migrations.migrate(store.client, ddl.build_tables(schemas))


# -- rows, PII, fence ----------------------------------------------------------------

def test_pii_is_keyed_hash_and_joinable_in_sql(writer, store):
    e = {"event_type": "SubscriberCreated", "event_id": "e1", "event_time": DAY1, "source": "CRM-GD",
         "subscriber_id": "S1", "msisdn": "13300000001", "account_id": "A1", "home_province": "GD",
         "payment_type": "PREPAID", "plan_id": "P1", "real_name": "张三", "id_number": "440106199001011234",
         "broadband_account": None, "broadband_type": "NONE", "access_ne_id": None}
    writer.add("bss.subscriber.events", e, 0, 0, DAY1)
    writer.flush()
    rows = q(store, "SELECT real_name_hmac, id_number_hmac FROM bss_subscriber_events")
    assert rows == [(hash_value("张三", KEY), hash_value("440106199001011234", KEY))]
    dump = str(q(store, "SELECT * FROM bss_subscriber_events"))
    assert "张三" not in dump and "440106199001011234" not in dump
    # an authorized user holding the key finds the row in SQL
    found = q(store, "SELECT subscriber_id FROM bss_subscriber_events WHERE id_number_hmac = "
                     "lower(hex(HMAC('SHA256', '440106199001011234', 'test-pii-key')))")
    assert found == [("S1",)]


def test_pii_key_file_when_env_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("TELBUS_PII_KEY", raising=False)
    k1 = load_key(tmp_path)
    assert load_key(tmp_path) == k1 and len(k1) == 64
    assert oct((tmp_path / "secrets" / "pii.key").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("TELBUS_PII_KEY", "abc")
    assert load_key(tmp_path) == b"abc"


def test_multi_type_topic_rows_and_meta_columns(writer, store):
    f = Feeder(writer)
    f.add("bss.order.events",
          {"event_type": "OrderSubmitted", "event_id": "o1", "event_time": DAY1, "source": "CRM-GD",
           "order_id": "O1", "subscriber_id": "S1", "channel": "APP",
           "items": [{"action": "ADD", "product_id": "VAS1", "product_type": "VAS"}]},
          {"event_type": "WorkOrderCompleted", "event_id": "o2", "event_time": DAY1 + 1000, "source": "BAC",
           "order_id": "O1", "work_order_id": "W1", "result": "FAILED", "error": "timeout"})
    res = f.flush()
    assert res.rows == {"bss_order_events": 2}
    rows = q(store, "SELECT event_type, order_id, subscriber_id, work_order_id, result, items, _topic, "
                    "_partition, _offset, toUnixTimestamp64Milli(event_time) FROM bss_order_events ORDER BY _offset")
    assert rows[0][:6] == ("OrderSubmitted", "O1", "S1", None, None,
                           [{"action": "ADD", "product_id": "VAS1", "product_type": "VAS"}])
    assert rows[1][:6] == ("WorkOrderCompleted", "O1", None, "W1", "FAILED", [])
    assert rows[0][6:] == ("bss.order.events", 0, 0, DAY1)
    assert q(store, "SELECT arrayJoin(items).product_id FROM bss_order_events") == [("VAS1",)]


def test_wrong_event_type_and_missing_required_field_are_rejected(writer):
    from sinks.ddl import MappingError

    with pytest.raises(MappingError, match="does not belong"):
        writer.add("net.cdr.raw", {"event_type": "Login"}, 0, 0, 0)
    bad = cdr("c1", "GD", DAY1)
    del bad["province"]
    with pytest.raises(MappingError, match="province"):
        writer.add("net.cdr.raw", bad, 0, 0, 0)
    nulled = cdr("c2", "GD", DAY1)
    nulled["calling_number"] = None
    writer.add("net.cdr.raw", cdr("c3", "GD", DAY1), 0, 1, 0)
    writer.add("net.cdr.raw", nulled, 0, 2, 0)
    res = writer.flush()
    assert res.rows == {"net_cdr_raw": 1}
    assert [(r.partition, r.offset) for r in res.rejected] == [(0, 2)]
    assert "calling_number" in res.rejected[0].reason


def test_offset_fence_skips_what_the_store_already_has(store):
    w1 = Writer(store, Hasher(KEY))
    for o in range(5):
        w1.add("net.cdr.raw", cdr(f"c{o}", "GD", DAY1), 0, o, 0)
    for o in range(3):
        w1.add("net.cdr.raw", cdr(f"d{o}", "GD", DAY1), 1, o, 0)
    w1.flush()
    # "crash" before the offset commit: a new writer sees everything re-delivered
    w2 = Writer(store, Hasher(KEY))
    assert w2.stored_next_offset("net.cdr.raw", 0) == 5
    assert w2.stored_next_offset("net.cdr.raw", 2) is None
    added = [w2.add("net.cdr.raw", cdr(f"c{o}", "GD", DAY1), 0, o, 0) for o in range(7)]
    assert added == [False] * 5 + [True] * 2
    assert w2.skipped == 5
    w2.flush()
    assert store.count(store.tables["net.cdr.raw"], final=False) == 10


def test_final_dedups_a_record_inserted_twice(store):
    """Backstop: should a duplicate get past the fence, FINAL shows each record once."""
    t = store.tables["net.cdr.raw"]
    w = Writer(store, Hasher(KEY))
    w.add("net.cdr.raw", cdr("c1", "GD", DAY1), 0, 0, 0)
    w.flush()
    w.reset_fence()
    w._fence["net.cdr.raw"] = {}          # simulate a writer that does not know the store
    w.add("net.cdr.raw", cdr("c1", "GD", DAY1), 0, 0, 0)
    w.flush()
    assert store.count(t, final=False) == 2
    assert store.count(t, final=True) == 1


# -- views on known data ---------------------------------------------------------------

def test_daily_revenue_per_province_and_plan_any_arrival_order(writer, store):
    f = Feeder(writer)
    # rated side first for c1 and c2 (their raw CDRs arrive later), raw first for c3
    f.add("bss.cdr.rated", rated("c1", 100, "P1", DAY1), rated("c2", 50, "P2", DAY1))
    f.add("net.cdr.raw", cdr("c3", "GD", DAY2))
    f.flush()
    assert ("2026-11-20", "UNKNOWN", "P1", 100, 1) in [
        (str(r[0]),) + tuple(r[1:]) for r in q(store, "SELECT * FROM v_daily_revenue")]
    f.add("net.cdr.raw", cdr("c1", "GD", DAY1), cdr("c2", "BJ", DAY1), cdr("c4", "GD", DAY1))
    f.add("bss.cdr.rated", rated("c3", 70, "P1", DAY2),
          rated("c4", 0, None, DAY1, status="REJECTED"),
          rated("c1", 0, "P1", DAY1, status="DUPLICATE"))
    f.flush()
    got = sorted((str(d), p, plan, rev, n) for d, p, plan, rev, n in
                 q(store, "SELECT day, province, plan_id, revenue_li, rated_cdrs FROM v_daily_revenue"))
    assert got == [("2026-11-20", "BJ", "P2", 50, 1), ("2026-11-20", "GD", "P1", 100, 1),
                   ("2026-11-21", "GD", "P1", 70, 1)]
    # a re-delivered record (bypassing the fence) does not change revenue
    t = store.tables["bss.cdr.rated"]
    m = writer.mappers["bss.cdr.rated"]
    store.insert(t, m.columns([m.row(rated("c1", 100, "P1", DAY1), 0, 0, 0)]))
    got2 = sorted((str(d), p, plan, rev, n) for d, p, plan, rev, n in
                  q(store, "SELECT day, province, plan_id, revenue_li, rated_cdrs FROM v_daily_revenue"))
    assert got2 == got
    assert views.audit(store.client)["v_daily_revenue"]["ok"]


def test_monthly_usage_per_subscriber(writer, store):
    f = Feeder(writer)
    f.add("bss.cdr.rated",
          rated("v1", 120, "P1", DAY1, units=90),
          rated("v2", 60, "P1", DAY1, units=30),
          rated("s1", 100, "P1", DAY1, service="SMS", units=1),
          rated("s2", 0, "P1", DAY1, service="SMS", units=1),
          rated("d1", 500, "P1", DAY1, service="DATA", units=2048),
          rated("x1", 0, "P1", DAY1, status="REJECTED", units=0),
          rated("v3", 10, "P2", DAY1, sub="S2", units=6))
    f.flush()
    # re-delivery after a crash: the fence drops the already stored records
    w2 = Writer(store, Hasher(KEY))
    assert not w2.add("bss.cdr.rated", rated("v1", 120, "P1", DAY1, units=90), 0, 0, 0)
    rows = {r[1]: r for r in q(store, "SELECT billing_period, subscriber_id, voice_seconds, voice_minutes, sms, "
                                      "data_kb, data_mb, amount_li, cdrs FROM v_monthly_usage")}
    assert rows["S1"] == ("202611", "S1", 120, 2.0, 2, 2048, 2.0, 780, 5)
    assert rows["S2"] == ("202611", "S2", 6, 0.1, 0, 0, 0.0, 10, 1)
    assert views.audit(store.client)["v_monthly_usage"]["ok"]


def test_fraud_alerts_per_rule_per_day_count_distinct_alerts(writer, store):
    def alert(aid, rule, subject, start, evidence):
        return {"event_type": "FraudAlert", "alert_id": aid, "rule": rule, "subject_type": "ACCOUNT",
                "subject": subject, "severity": "HIGH", "window_start": start, "window_end": start + 60_000,
                "evidence": evidence, "first_event_id": "e1"}
    f = Feeder(writer)
    f.add("sec.fraud.alerts",
          alert("a1", "LOGIN_BRUTE_FORCE", "acc1", DAY1, {"bad_password": 5}),
          alert("a1", "LOGIN_BRUTE_FORCE", "acc1", DAY1, {"bad_password": 9}),   # folded evidence
          alert("a2", "LOGIN_BRUTE_FORCE", "acc2", DAY1, {"bad_password": 5}),
          alert("a3", "IRSF", "S1", DAY1, {"calls": 3}),
          alert("a4", "IRSF", "S1", DAY2, {"calls": 4}))
    f.flush()
    got = sorted((str(d), r, a, s) for d, r, a, s in
                 q(store, "SELECT day, rule, alerts, subjects FROM v_fraud_alerts_daily"))
    assert got == [("2026-11-20", "IRSF", 1, 1), ("2026-11-20", "LOGIN_BRUTE_FORCE", 2, 2),
                   ("2026-11-21", "IRSF", 1, 1)]
    assert q(store, "SELECT evidence FROM sec_fraud_alerts FINAL WHERE alert_id = 'a2'") == [
        ({"bad_password": 5},)]
    assert views.audit(store.client)["v_fraud_alerts_daily"]["ok"]


def test_open_incidents(writer, store):
    def inc(iid, change, t, alarms=("A1",)):
        return {"event_type": "IncidentEvent", "incident_id": iid, "change": change, "root_ne_id": "NE1",
                "root_alarm_id": "A1", "severity": "MAJOR", "alarm_ids": list(alarms),
                "affected_subscribers": 12, "affected_services": ["BROADBAND"], "flapping": False,
                "opened_at": DAY1, "site_id": "SITE1", "merged_into": None, "root_ne_known": True,
                "updated_at": t}
    f = Feeder(writer)
    f.add("oss.incidents", inc("I1", "OPENED", DAY1), inc("I2", "OPENED", DAY1), inc("I3", "OPENED", DAY1))
    f.flush()
    f.add("oss.incidents", inc("I1", "UPDATED", DAY1 + 1000, ("A1", "A2")), inc("I2", "CLEARED", DAY1 + 2000),
          inc("I3", "MERGED", DAY1 + 3000))
    f.flush()
    rows = q(store, "SELECT incident_id, change, alarm_ids, affected_subscribers, site_id FROM v_open_incidents")
    assert rows == [("I1", "UPDATED", ["A1", "A2"], 12, "SITE1")]
    assert views.audit(store.client)["v_open_incidents"]["ok"]


def test_latest_subscription_state(writer, store):
    def st(sub, version, status, products):
        return {"event_type": "SubscriptionState", "subscriber_id": sub, "msisdn": "13300000001",
                "status": status, "plan_id": "P1", "payment_type": "PREPAID", "broadband_account": None,
                "broadband_type": "NONE", "products": products, "version": version, "updated_at": DAY1 + version}
    f = Feeder(writer)
    f.add("bss.subscription.state", st("S1", 1, "ACTIVE", []), st("S1", 2, "ACTIVE", ["VAS1"]),
          st("S2", 1, "ACTIVE", []))
    f.flush()
    f.add("bss.subscription.state", st("S1", 3, "SUSPENDED", ["VAS1"]), st("S1", 2, "ACTIVE", ["VAS1"]))
    f.flush()
    rows = q(store, "SELECT subscriber_id, status, products, version FROM v_subscription_state ORDER BY 1")
    assert rows == [("S1", "SUSPENDED", ["VAS1"], 3), ("S2", "ACTIVE", [], 1)]
    assert views.audit(store.client)["v_subscription_state"]["ok"]


def test_rebuild_repairs_a_view_target(writer, store):
    f = Feeder(writer)
    f.add("bss.cdr.rated", rated("v1", 120, "P1", DAY1, units=90))
    f.flush()
    store.client.command("TRUNCATE TABLE usage_monthly")
    assert not views.audit(store.client)["v_monthly_usage"]["ok"]
    views.rebuild(store.client, "usage_monthly")
    assert views.audit(store.client)["v_monthly_usage"]["ok"]
    views.rebuild(store.client, "cdr_revenue_facts")
    assert views.audit(store.client)["v_daily_revenue"]["ok"]


def test_equal_versions_of_a_subscription_state_resolve_to_the_later_record(writer, store):
    """A reset processor publishes versions from 1 again: the view, its audit and a rebuild
    all take the later record in the log among equal versions."""
    def st(status, version=3):
        return {"event_type": "SubscriptionState", "subscriber_id": "S1", "msisdn": "13300000001",
                "status": status, "plan_id": "P1", "payment_type": "PREPAID", "broadband_account": None,
                "broadband_type": "NONE", "products": [], "version": version, "updated_at": DAY1}
    f = Feeder(writer)
    f.add("bss.subscription.state", st("ACTIVE"), st("SUSPENDED"))
    f.flush()
    f.add("bss.subscription.state", st("ACTIVE"), st("SUSPENDED", 2), st("TERMINATED"))
    f.flush()
    latest = "SELECT status, version FROM v_subscription_state"
    assert q(store, latest) == [("TERMINATED", 3)]
    assert views.audit(store.client)["v_subscription_state"]["ok"]
    for _ in range(3):         # a rebuild reads the source in parallel: order must not matter
        views.rebuild(store.client, "subscription_latest")
        assert q(store, latest) == [("TERMINATED", 3)]
        assert views.audit(store.client)["v_subscription_state"]["ok"]
