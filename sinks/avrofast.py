"""Fast path: let the engine parse the Avro instead of decoding every record in Python.

A record in single-object encoding whose fingerprint is the *current* schema of an event
type that maps 1:1 onto its table (no PII to hash, no nested record to flatten, no array
of records) is not decoded by the sink at all. Its Avro body is framed into an Avro
object container, one record per block, and inserted with ``FORMAT Avro``; the engine
parses it in C++. Avro binary is the concatenation of the fields in order, so the Kafka
value as it is (its 10-byte header read as a leading ``fixed`` field no column takes, then
the body) followed by the encodings of ``_partition``, ``_offset``, ``_timestamp``,
``event_type``, ``_topic`` is a valid record of the writer schema extended by those fields.

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

#: The record's own 10-byte single-object header (magic + fingerprint) read as a leading
#: ``fixed`` field that no column takes (the engine skips fields without a column): the
#: Kafka value goes into the container as it is, without a copy of its body.
HEADER_FIELD = {"name": "_telbus_header",
                "type": {"type": "fixed", "name": "TelbusSingleObjectHeader", "namespace": "telbus.sink", "size": 10}}


def zigzag(n: int) -> bytes:
    """Avro ``long``/``int`` encoding (zig-zag varint)."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _ONE[z]
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_ONE = [bytes((i,)) for i in range(128)]


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
    extended["fields"] = [HEADER_FIELD] + list(schema["fields"]) + META_FIELDS
    meta = {"avro.schema": json.dumps(extended, separators=(",", ":")).encode(), "avro.codec": b"null"}
    header = bytearray(b"Obj\x01")
    header += zigzag(len(meta))
    for k, v in meta.items():
        header += _string(k) + zigzag(len(v)) + v
    header += zigzag(0) + SYNC
    return AvroPlan(event_type, fingerprint, bytes(header), _string(event_type) + _string(table.topic))


#: block header (count 1 + size) for every record size below 16 KiB: one list lookup
_BLOCK_HEAD = [b"\x02" + zigzag(n) for n in range(16384)]


def _offset_bytes(o: int) -> bytes:
    """zigzag varint of a non-negative offset (unrolled for the common sizes)."""
    z = o << 1
    if z < 0x80:
        return _ONE[z]
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    if z < 0x200000:
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
    if z < 0x10000000:
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, ((z >> 14) & 0x7F) | 0x80, z >> 21))
    return zigzag(o)


def container(plan: AvroPlan, records: list[tuple]) -> bytes:
    """``records``: (partition, offset, timestamp_ms, value, source) sorted by partition and
    offset, with value the single-object bytes (header 10 bytes, then the Avro body).

    The hot loop of the sink (one pass per record, on the main thread): the value is not
    sliced or copied before the final join (a ``memoryview`` per record made that join
    several times slower), the partition's encoding is kept while the partition does not
    change, timestamps are encoded once each (records of one millisecond share it).
    """
    parts = [plan.header]
    append = parts.append
    tail = plan.tail + SYNC
    # block size = value (header field + body) + meta + tail, without the sync
    overhead = len(SYNC)
    heads = _BLOCK_HEAD
    obytes = _offset_bytes
    tcache: dict[int, bytes] = {}
    last_p, pb = None, b""
    for p, o, ts, value, _source in records:
        if p != last_p:
            last_p, pb = p, zigzag(p)
        tb = tcache.get(ts)
        if tb is None:
            tb = tcache[ts] = zigzag(ts)
        meta = pb + obytes(o) + tb + tail
        size = len(value) + len(meta) - overhead
        append(heads[size] if size < 16384 else b"\x02" + zigzag(size))
        append(value)
        append(meta)
    return b"".join(parts)
