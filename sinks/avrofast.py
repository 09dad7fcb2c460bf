"""Fast path: let the engine parse the Avro instead of decoding every record in Python.

A record in single-object encoding whose fingerprint is the *current* schema of an event
type that maps 1:1 onto its table (no PII to hash, no nested record to flatten, no array
of records) is not decoded by the sink at all. Its Avro body is framed into an Avro
object container, one record per block, and inserted with ``FORMAT Avro``; the engine
parses it in C++. The Kafka metadata and ``event_type`` travel as extra fields appended to
the record: Avro binary is the concatenation of the fields in order, so ``body`` followed
by the encodings of ``_partition``, ``_offset``, ``_timestamp``, ``event_type``, ``_topic``
is a valid record of the writer schema extended by those fields.

One record per block keeps records isolated (a block's bytes cannot be consumed by the
next record). A body the engine cannot parse fails the INSERT; the writer then decodes
the batch with telbus.codec, dead-letters what does not decode and inserts the rest
through the Python path. Older schema versions, Confluent framing and the excluded types
always take the Python path (telbus.codec resolves them exactly).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sinks.ddl import Table

MAGIC = b"\xc3\x01"
SYNC = b"telbus-sink-sync"          # 16 bytes
assert len(SYNC) == 16

META_FIELDS = [
    {"name": "_partition", "type": "int"},
    {"name": "_offset", "type": "long"},
    {"name": "_timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "event_type", "type": "string"},
    {"name": "_topic", "type": "string"},
]

def zigzag(n: int) -> bytes:
    """Avro ``long``/``int`` encoding (zig-zag varint)."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return zigzag(len(b)) + b


@dataclass(frozen=True)
class AvroPlan:
    event_type: str
    fingerprint: int
    header: bytes           # container header with the extended schema
    tail: bytes             # encoded event_type + _topic


def eligible(table: Table, event_type: str) -> bool:
    """Every column of this event type is a plain field of the same name."""
    fields = table.type_fields[event_type]
    for c in table.columns:
        if c.name in fields and c.source[0] != "field":
            return False
    return True


def plan_for(table: Table, event_type: str, schema_json: str, fingerprint: int) -> AvroPlan:
    schema = json.loads(schema_json)
    extended = dict(schema)
    extended["fields"] = list(schema["fields"]) + META_FIELDS
    meta = {"avro.schema": json.dumps(extended, separators=(",", ":")).encode(), "avro.codec": b"null"}
    header = bytearray(b"Obj\x01")
    header += zigzag(len(meta))
    for k, v in meta.items():
        header += _string(k) + zigzag(len(v)) + v
    header += zigzag(0) + SYNC
    return AvroPlan(event_type, fingerprint, bytes(header), _string(event_type) + _string(table.topic))


def container(plan: AvroPlan, records: list[tuple]) -> bytes:
    """``records``: (partition, offset, timestamp_ms, value) with value = single-object bytes."""
    parts = [plan.header]
    append = parts.append
    tail = plan.tail
    pcache: dict[int, bytes] = {}
    for p, o, ts, value in records:
        pb = pcache.get(p)
        if pb is None:
            pb = pcache[p] = zigzag(p)
        rec = b"".join((value[10:], pb, zigzag(o), zigzag(ts), tail))
        append(b"\x02")                 # one record in this block
        append(zigzag(len(rec)))
        append(rec)
        append(SYNC)
    return b"".join(parts)
