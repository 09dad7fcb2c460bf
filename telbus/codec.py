"""The one Avro codec every producer, processor, sink and CLI uses.

Encoding: single-object encoding (``C3 01`` + little-endian CRC-64-AVRO fingerprint +
Avro binary) unless ``TELBUS_SCHEMA_REGISTRY_URL`` is set, then the Confluent wire format
(``00`` + big-endian schema id + Avro binary). Decoding accepts both, whatever the mode,
so a topic written by a mix of producers stays readable.

Decoded events are plain dicts with ``event_type`` and timestamps as epoch-ms ints
(see docs/CONVENTIONS.md).
"""
from __future__ import annotations

import io
import struct
from functools import lru_cache

from fastavro import schemaless_reader, schemaless_writer

from telbus import config
from telbus.schemas import Catalog, SchemaVersion, catalog

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0


class DecodeError(ValueError):
    """The bytes are not an event this project can read; the message says why."""


class Codec:
    def __init__(self, cat: Catalog | None = None, registry_url: str | None = None, registry_client=None):
        self.catalog = cat or catalog()
        self._registry = registry_client
        if self._registry is None and registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._registry = SchemaRegistryClient.new_client({"url": registry_url})
        self._registered: dict[str, int] = {}                   # subject -> schema id
        self._by_id: dict[int, tuple[dict, SchemaVersion]] = {}  # id -> (writer_raw, reader)

    @property
    def confluent(self) -> bool:
        return self._registry is not None

    # -- encoding --------------------------------------------------------------
    def encode(self, event: dict) -> bytes:
        name = event.get("event_type")
        if not name:
            raise ValueError("event has no event_type")
        sv = self.catalog.current(name)
        buf = io.BytesIO()
        if self._registry is not None:
            buf.write(struct.pack(">bI", CONFLUENT_MAGIC, self._schema_id(sv)))
        else:
            buf.write(SINGLE_OBJECT_MAGIC)
            buf.write(sv.wire_fingerprint)
        schemaless_writer(buf, sv.parsed_raw, event)
        return buf.getvalue()

    def _schema_id(self, sv: SchemaVersion) -> int:
        # RecordNameStrategy: topics carry several record types, and the same record
        # (e.g. a DLQ'd or replayed one) may travel on several topics.
        subject = f"telbus.{sv.name}"
        if subject not in self._registered:
            from confluent_kafka.schema_registry import Schema

            self._registered[subject] = self._registry.register_schema(subject, Schema(sv.json, "AVRO"))
        return self._registered[subject]

    # -- decoding --------------------------------------------------------------
    def decode(self, data: bytes | None) -> dict:
        if not data:
            raise DecodeError("empty value")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError("truncated single-object header")
            fp = int.from_bytes(data[2:10], "little")
            sv = self.catalog.by_fingerprint.get(fp)
            if sv is None:
                raise DecodeError(f"unknown schema fingerprint {fp:016x}")
            current = self.catalog.current(sv.name)
            reader = None if sv is current else current.parsed_raw
            return self._read(data, 10, sv.parsed_raw, reader, sv.name)
        if data[0] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError("truncated Confluent header")
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer, reader = self._resolve_id(schema_id)
            return self._read(data, 5, writer, reader.parsed_raw, reader.name)
        raise DecodeError(f"unknown framing (first byte 0x{data[0]:02x})")

    def _read(self, data: bytes, start: int, writer: dict, reader: dict | None, name: str) -> dict:
        stream = io.BytesIO(data)
        stream.seek(start)
        try:
            event = schemaless_reader(stream, writer, reader)
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise DecodeError(f"corrupt Avro body for {name}: {type(exc).__name__}: {exc}") from None
        if stream.tell() != len(data):
            raise DecodeError(f"{len(data) - stream.tell()} trailing bytes after {name} body")
        event["event_type"] = name
        return event

    def _resolve_id(self, schema_id: int) -> tuple[dict, SchemaVersion]:
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        if self._registry is None:
            raise DecodeError(f"Confluent-framed record (schema id {schema_id}) but no schema registry configured")
        import json

        import fastavro

        from telbus.schemas import strip_logical_types

        try:
            schema = self._registry.get_schema(schema_id)
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} not resolvable: {exc}") from None
        raw = json.loads(schema.schema_str)
        name = raw.get("name", "").rsplit(".", 1)[-1]
        if name not in self.catalog.history:
            raise DecodeError(f"schema id {schema_id} is record {name!r}, unknown here")
        writer = fastavro.parse_schema(strip_logical_types(raw), named_schemas={})
        self._by_id[schema_id] = (writer, self.catalog.current(name))
        return self._by_id[schema_id]


@lru_cache(maxsize=None)
def default_codec() -> Codec:
    """The process-wide codec, in the mode the environment asks for."""
    return Codec(registry_url=config.schema_registry_url())


def encode(event: dict) -> bytes:
    return default_codec().encode(event)


def decode(data: bytes | None) -> dict:
    return default_codec().decode(data)
