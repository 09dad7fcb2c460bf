"""The schema catalog: every ``.avsc`` in ``schemas/`` and every older version kept.

Fingerprints are taken over the *self-contained* parsing canonical form (each named type
defined in full at its first use), which is what every Avro implementation computes, so a
consumer outside this repository can resolve them from ``_telbus.schemas``.

Layout: ``schemas/<Record>.avsc`` is the current version of a record;
``schemas/history/<Record>.v<N>.avsc`` are older versions still readable (BACKWARD).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import fastavro
from fastavro.schema import to_parsing_canonical_form

from telbus import config


@dataclass(frozen=True)
class SchemaVersion:
    name: str                 # record name, e.g. "Cdr"
    version: int              # 1..n; the highest is current
    json: str                 # self-contained schema JSON as published
    canonical: str            # parsing canonical form
    fingerprint: int          # CRC-64-AVRO of canonical, as an unsigned integer
    parsed: dict = field(repr=False, compare=False)         # fastavro-parsed, with logical types
    parsed_raw: dict = field(repr=False, compare=False)     # logical types stripped: timestamps stay ints

    @property
    def fingerprint_hex(self) -> str:
        """Key of ``_telbus.schemas``: 16 lowercase hex digits, most significant first."""
        return f"{self.fingerprint:016x}"

    @property
    def wire_fingerprint(self) -> bytes:
        """The 8 bytes written after ``C3 01`` in single-object encoding (little-endian)."""
        return self.fingerprint.to_bytes(8, "little")


_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) fingerprint as defined in the Avro specification."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


def strip_logical_types(schema):
    """Copy of a schema with logicalType removed: decoding then yields epoch-ms ints.

    Processors compute on integers (deterministic, cheap); logical types do not change
    the binary encoding nor the canonical form, so this is safe for resolution.
    """
    if isinstance(schema, dict):
        out = {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        return out
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def _load(path: Path, name: str, version: int) -> SchemaVersion:
    raw = json.loads(path.read_text())
    if raw.get("name") != name:
        raise ValueError(f"{path}: record name {raw.get('name')!r} does not match file name {name!r}")
    parsed = fastavro.parse_schema(copy.deepcopy(raw), named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    parsed_raw = fastavro.parse_schema(strip_logical_types(copy.deepcopy(raw)), named_schemas={})
    return SchemaVersion(
        name=name, version=version, json=json.dumps(raw, separators=(",", ":"), ensure_ascii=False),
        canonical=canonical, fingerprint=crc64_avro(canonical.encode()),
        parsed=parsed, parsed_raw=parsed_raw,
    )


class Catalog:
    """All schema versions, by record name and by fingerprint."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.history: dict[str, list[SchemaVersion]] = {}
        for path in sorted(directory.glob("*.avsc")):
            name = path.stem
            old = sorted(
                (directory / "history").glob(f"{name}.v*.avsc"),
                key=lambda p: int(p.stem.rsplit(".v", 1)[1]),
            )
            versions = [_load(p, name, int(p.stem.rsplit(".v", 1)[1])) for p in old]
            current_version = (versions[-1].version + 1) if versions else 1
            versions.append(_load(path, name, current_version))
            self.history[name] = versions
        self.by_fingerprint = {v.fingerprint: v for vs in self.history.values() for v in vs}

    def current(self, name: str) -> SchemaVersion:
        try:
            return self.history[name][-1]
        except KeyError:
            raise KeyError(f"unknown event_type {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self.history)

    def all_versions(self) -> list[SchemaVersion]:
        return [v for name in self.names() for v in self.history[name]]


@lru_cache(maxsize=None)
def catalog(directory: str | None = None) -> Catalog:
    return Catalog(Path(directory) if directory else config.schemas_dir())
