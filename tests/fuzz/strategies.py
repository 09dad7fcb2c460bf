"""Hypothesis strategies: bad bytes of every kind for a topic, bad JSON lines for ``telbus produce``."""
from __future__ import annotations

import io
import json
import struct
from functools import lru_cache

from hypothesis import strategies as st

from telbus import codec, jsonform
from tests.samples import SAMPLES

import topics

SINGLE = codec.SINGLE_OBJECT_MAGIC


@lru_cache(maxsize=None)
def valid_values(topic: str) -> tuple[bytes, ...]:
    """Encodings of the sample events a topic carries."""
    return tuple(codec.encode(jsonform.event_from_json(e)) for e in SAMPLES[topic])


@lru_cache(maxsize=None)
def fingerprints(topic: str) -> tuple[bytes, ...]:
    """Wire fingerprints (8 bytes, little-endian) of every known version of the topic's records."""
    cat = codec.default_codec().catalog
    out = []
    for name in topics.catalog()[topic].events:
        out += [sv.wire_fingerprint for sv in cat.history[name]]
    return tuple(out)


def _known_fingerprints() -> set[bytes]:
    return {sv.wire_fingerprint for sv in codec.default_codec().catalog.all_versions()}


def future_schema_value(topic: str) -> bytes:
    """A record written with a newer version of the topic's first record type: one more field
    (with a default) than any schema here, so its fingerprint is unknown to every reader."""
    from fastavro import parse_schema, schemaless_writer
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    name = topics.catalog()[topic].events[0]
    sv = codec.default_codec().catalog.current(name)
    raw = json.loads(sv.json)
    raw["fields"] = raw["fields"] + [{"name": "added_in_the_future", "type": "string", "default": ""}]
    parsed = parse_schema(raw, named_schemas={})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    event = codec.decode(valid_values(topic)[0])
    event.pop("event_type")
    event["added_in_the_future"] = "from a newer producer"
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, event)
    assert fp not in _known_fingerprints()
    return SINGLE + fp + buf.getvalue()


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with a few random edits: flips, truncation, insertion, duplication, deletion."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "duplicate", "delete"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "duplicate":
            j = draw(st.integers(i, len(data)))
            data[j:j] = data[i:j]
        else:
            del data[i:i + draw(st.integers(1, 8))]
    return bytes(data)


def values(topic: str) -> st.SearchStrategy[bytes | None]:
    """Bytes a careless or hostile producer could put on ``topic``."""
    fps = fingerprints(topic)
    valid = valid_values(topic)
    return st.one_of(
        st.binary(max_size=512),                                                     # noise
        st.builds(lambda b: SINGLE + b, st.binary(max_size=64)),                       # bad header
        st.builds(lambda fp, b: SINGLE + fp + b, st.sampled_from(fps), st.binary(max_size=256)),  # garbage body
        st.builds(lambda fp, b: SINGLE + fp + b, st.binary(min_size=8, max_size=8), st.sampled_from(valid)
                  .map(lambda v: v[10:])),                                             # unknown fingerprint
        st.builds(lambda i, b: struct.pack(">bI", 0, i) + b, st.integers(0, 2**32 - 1),
                  st.binary(max_size=64)),                                             # Confluent, no registry
        st.sampled_from(valid).flatmap(lambda v: mutated(v)),                          # mutated valid records
        st.sampled_from([b"", None, b"\x00", SINGLE, b"null", b"{}", json.dumps(SAMPLES[topic][0]).encode()]),
    )


def keys() -> st.SearchStrategy[bytes | None]:
    return st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=20).map(str.encode))


# ----------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
                         st.sampled_from(["", "2026-11-20T10:00:00+08:00", "2026-11-20T10:00:00", "Z", "-1",
                                          "VOICE", "MO", "ADD", "GD", "SUCCESS", "CLEARED"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


@st.composite
def mutated_event(draw, topic: str) -> dict:
    """A sample event of ``topic`` with fields dropped, replaced by random JSON, or added."""
    event = json.loads(json.dumps(draw(st.sampled_from(SAMPLES[topic]))))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "add", "nested", "event_type"]))
        fields = sorted(event)
        if kind == "drop" and fields:
            event.pop(draw(st.sampled_from(fields)))
        elif kind == "replace" and fields:
            event[draw(st.sampled_from(fields))] = draw(json_values)
        elif kind == "add":
            event[draw(st.text(max_size=12))] = draw(json_values)
        elif kind == "nested":
            nested = [f for f in fields if isinstance(event[f], (dict, list)) and event[f]]
            if nested:
                f = draw(st.sampled_from(nested))
                if isinstance(event[f], dict):
                    event[f][draw(st.sampled_from(sorted(event[f])))] = draw(json_values)
                else:
                    event[f][draw(st.integers(0, len(event[f]) - 1))] = draw(json_values)
        else:
            event["event_type"] = draw(st.one_of(st.sampled_from(sorted(codec.default_codec().catalog.names())),
                                                 json_values))
    return event


def json_lines(topic: str) -> st.SearchStrategy[str]:
    """One input line: valid, a mutated event, random JSON, or not JSON at all."""
    return st.one_of(
        st.sampled_from(SAMPLES[topic]).map(json.dumps),
        mutated_event(topic).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=80).map(lambda s: s.replace("\n", " ").replace("\r", " ")),
        st.sampled_from(["{", "[]", "null", "\"Cdr\"", "{\"event_type\": null}", "\ufeff{}", "{} {}"]),
    )
