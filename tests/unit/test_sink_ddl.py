"""The Avro -> ClickHouse mapping (sinks.ddl): every construct the schemas use."""
from __future__ import annotations

import pytest

from sinks import ddl
from sinks.ddl import MappingError, avro_to_ch


@pytest.mark.parametrize("avro, sql", [
    ("string", "String"),
    ("int", "Int32"),
    ("long", "Int64"),
    ("boolean", "Bool"),
    ("double", "Float64"),
    ({"type": "long", "logicalType": "timestamp-millis"}, "DateTime64(3, 'UTC')"),
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "LowCardinality(String)"),
    (["null", "string"], "Nullable(String)"),
    (["null", "int"], "Nullable(Int32)"),
    (["null", {"type": "long", "logicalType": "timestamp-millis"}], "Nullable(DateTime64(3, 'UTC'))"),
    # ClickHouse refuses Nullable(LowCardinality(...)): the nullable goes inside
    (["null", {"type": "enum", "name": "E2", "symbols": ["A"]}], "LowCardinality(Nullable(String))"),
    ({"type": "array", "items": "string"}, "Array(String)"),
    # Array/Map cannot be Nullable: an absent value is stored as empty
    (["null", {"type": "array", "items": "string"}], "Array(String)"),
    ({"type": "map", "values": "long"}, "Map(String, Int64)"),
    ({"type": "array", "items": {"type": "record", "name": "I", "fields": [
        {"name": "action", "type": {"type": "enum", "name": "A3", "symbols": ["ADD"]}},
        {"name": "product_id", "type": "string"},
        {"name": "note", "type": ["null", "string"]}]}},
     "Array(Tuple(action LowCardinality(String), product_id String, note Nullable(String)))"),
])
def test_type_mapping(avro, sql):
    assert avro_to_ch(avro).sql() == sql


def test_unsupported_union_is_a_clear_error():
    with pytest.raises(MappingError, match="union"):
        avro_to_ch(["null", "string", "long"])


def test_every_contract_topic_has_a_table():
    tables = ddl.build_tables()
    expected = {
        "bss.subscriber.events", "bss.order.events", "bss.tariff.plans", "net.cdr.raw", "oss.topology",
        "oss.alarm.raw", "sec.login.events", "bss.cdr.rated", "ocs.credit.control", "sec.fraud.alerts",
        "oss.incidents", "bss.order.status", "bss.subscription.state",
    }
    assert set(tables) == expected
    for topic, t in tables.items():
        assert t.name == topic.replace(".", "_")
        names = t.column_names
        assert names[0] == "event_type"
        assert names[-4:] == ["_topic", "_partition", "_offset", "_timestamp"]
        assert len(set(names)) == len(names)
        sql = t.create_sql()
        assert "ReplacingMergeTree" in sql and "ORDER BY (_partition, _offset)" in sql


def test_multi_event_topic_is_the_union_with_nullable_where_not_shared():
    t = ddl.build_tables()["bss.subscriber.events"]
    types = {c.name: c.type.sql() for c in t.columns}
    assert t.event_types == ("SubscriberCreated", "PlanChanged", "StatusChanged", "BalanceRecharged")
    # in every type
    assert types["subscriber_id"] == "String"
    assert types["event_id"] == "String"
    assert types["event_time"] == "DateTime64(3, 'UTC')"
    # only in some
    assert types["msisdn"] == "Nullable(String)"
    assert types["amount_li"] == "Nullable(Int64)"
    assert types["status"] == "LowCardinality(Nullable(String))"
    assert types["channel"] == "LowCardinality(Nullable(String))"
    assert types["plan_id"] == "Nullable(String)"          # SubscriberCreated + PlanChanged only
    # PII never in clear: keyed-hash columns instead
    assert "real_name" not in types and "id_number" not in types
    assert types["real_name_hmac"] == "Nullable(String)"
    assert types["id_number_hmac"] == "Nullable(String)"


def test_order_events_items_are_named_tuples():
    t = ddl.build_tables()["bss.order.events"]
    types = {c.name: c.type.sql() for c in t.columns}
    assert types["items"] == ("Array(Tuple(action LowCardinality(String), product_id String, "
                              "product_type LowCardinality(String)))")
    assert types["order_id"] == "String"
    assert types["work_order_id"] == "Nullable(String)"
    assert types["error"] == "Nullable(String)"


def test_nested_records_are_flattened():
    t = ddl.build_tables()["bss.tariff.plans"]
    types = {c.name: c.type.sql() for c in t.columns}
    assert types["voice_domestic_li_per_min"] == "Int64"
    assert types["voice_increment_s"] == "Int32"
    assert types["sms_free_domestic_sms"] == "Int32"
    assert types["data_li_per_mb"] == "Int64"
    assert "voice" not in types


def test_outputs_map_and_bool_and_arrays():
    tables = ddl.build_tables()
    fraud = {c.name: c.type.sql() for c in tables["sec.fraud.alerts"].columns}
    assert fraud["evidence"] == "Map(String, Int64)"
    inc = {c.name: c.type.sql() for c in tables["oss.incidents"].columns}
    assert inc["flapping"] == "Bool"
    assert inc["alarm_ids"] == "Array(String)"
    assert inc["updated_at"] == "Nullable(DateTime64(3, 'UTC'))"
    st = {c.name: c.type.sql() for c in tables["bss.subscription.state"].columns}
    assert st["payment_type"] == "LowCardinality(Nullable(String))"


def test_conflicting_field_types_across_event_types_are_refused():
    a = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "string"}]}
    b = {"type": "record", "name": "B", "fields": [{"name": "x", "type": "long"}]}
    with pytest.raises(MappingError, match="field x"):
        ddl.build_table("t.x", ("A", "B"), {"A": a, "B": b})


def test_topic_map_comes_from_the_catalog():
    topics = ddl.contract_topics()
    assert topics["bss.order.events"] == ("OrderSubmitted", "WorkOrderDispatched", "WorkOrderCompleted")
    assert not any(t.endswith(".dlq") for t in topics)
    assert "_telbus.schemas" not in topics
