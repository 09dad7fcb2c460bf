"""Codec, fingerprints and schema evolution: pure, no broker."""
import io
import json

import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
import avro.schema

from telbus import codec, jsonform
from telbus.schemas import catalog, crc64_avro
from tests.samples import SAMPLES


def test_crc64_avro_matches_the_avro_project_test_vector():
    assert crc64_avro(b'"int"') == 8247732601305521295
    assert format(crc64_avro(b'"int"'), "016x") == "7275d51a3f395c8f"


def test_fingerprints_agree_with_fastavro_wire_bytes():
    for sv in catalog().all_versions():
        assert fastavro.schema.fingerprint(sv.canonical, "CRC-64-AVRO") == sv.wire_fingerprint.hex()


def test_schemas_are_self_contained_named_records_in_telbus_namespace():
    for sv in catalog().all_versions():
        raw = json.loads(sv.json)
        assert raw["type"] == "record" and raw["namespace"] == "telbus"
        # Parsing with no other schema known must succeed: every named type is inline.
        fastavro.parse_schema(json.loads(sv.json), named_schemas={})
        assert sv.canonical.startswith('{"name":"telbus.')


def test_every_event_type_of_the_contract_has_a_schema():
    import topics

    for t in topics.contract_topics():
        for name in t.events:
            assert name in catalog().history


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_single_object_round_trip(topic):
    for obj in SAMPLES[topic]:
        event = jsonform.event_from_json(obj)
        data = codec.encode(event)
        sv = catalog().current(obj["event_type"])
        assert data[:2] == b"\xc3\x01" and data[2:10] == sv.wire_fingerprint
        assert codec.decode(data) == event


def test_decode_refuses_garbage_with_reasons():
    good = codec.encode(jsonform.event_from_json(SAMPLES["net.cdr.raw"][0]))
    cases = {
        b"": "empty",
        b"\xc3\x01\x00": "truncated",
        b"\xc3\x01" + b"\x01" * 8 + good[10:]: "unknown schema fingerprint",
        good[:-3]: "corrupt",
        good + b"\x00": "trailing",
        b"{json}": "unknown framing",
        b"\x00\x00\x00\x00\x07abc": "no schema registry",
    }
    for data, reason in cases.items():
        with pytest.raises(codec.DecodeError, match=reason):
            codec.decode(data)


def _history_pairs():
    for name, versions in catalog().history.items():
        for old in versions[:-1]:
            yield name, old, versions[-1]


def test_some_schema_history_is_kept():
    assert list(_history_pairs()), "the BACKWARD test below must have something to prove"


@pytest.mark.parametrize("name,old,new", list(_history_pairs()), ids=lambda x: getattr(x, "version", x))
def test_backward_compatible_every_kept_version(name, old, new):
    # The avro library's checker: the new schema (reader) can read the old one (writer).
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(new.json), avro.schema.parse(old.json))
    assert result.compatibility is SchemaCompatibilityType.compatible, result
    # And our codec does it: bytes written with the old version decode as the new record.
    datum = {f["name"]: _example(f["type"]) for f in json.loads(old.json)["fields"]}
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + old.wire_fingerprint)
    fastavro.schemaless_writer(buf, old.parsed_raw, datum)
    decoded = codec.decode(buf.getvalue())
    assert decoded["event_type"] == name
    for k, v in datum.items():
        assert decoded[k] == v
    new_only = {f["name"] for f in json.loads(new.json)["fields"]} - set(datum)
    assert new_only and all(k in decoded for k in new_only)


def _example(t):
    if isinstance(t, list):
        return None if "null" in t else _example(t[0])
    if isinstance(t, dict):
        if t.get("logicalType") == "timestamp-millis":
            return 1795140000000
        if t["type"] == "enum":
            return t["symbols"][0]
        if t["type"] == "array":
            return [_example(t["items"])]
        if t["type"] == "map":
            return {"k": _example(t["values"])}
        if t["type"] == "record":
            return {f["name"]: _example(f["type"]) for f in t["fields"]}
        return _example(t["type"])
    return {"string": "x", "int": 7, "long": 7, "boolean": True, "null": None}[t]
