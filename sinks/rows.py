"""Event dict -> row tuple for a topic table, and row batches -> columns for insert.

Per (table, event type) a small row function is generated once from the table's columns
(plain Python source compiled at start-up), so the per-record cost is one call that
builds one tuple: no per-field dispatch in the hot loop.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from sinks.ddl import MappingError, Table
from sinks.pii import Hasher

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def to_epoch_ms(value) -> int | None:
    """Epoch ms from an int (as the codec gives) or a datetime (as other decoders give)."""
    if value is None or value.__class__ is int:
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, bool):
        raise MappingError(f"timestamp is a boolean: {value!r}")
    if isinstance(value, int):
        return int(value)
    raise MappingError(f"timestamp is {type(value).__name__}, expected epoch ms")


def _row_function(table: Table, event_type: str, hasher):
    """Compile ``f(e, partition, offset, timestamp_ms) -> tuple`` for one event type."""
    fields = table.type_fields[event_type]
    exprs = []
    consts: dict[str, object] = {"_hash": hasher, "_ET": event_type, "_TOPIC": table.topic}
    for i, c in enumerate(table.columns):
        kind = c.source[0]
        empty = c.type.empty()
        const_name = f"_E{i}"
        consts[const_name] = empty
        if kind == "event_type":
            exprs.append("_ET")
        elif kind == "meta":
            exprs.append({"_topic": "_TOPIC", "_partition": "p", "_offset": "o", "_timestamp": "ts"}[c.name])
        elif c.name not in fields:
            exprs.append(const_name)
        elif kind == "field":
            name = c.source[1]
            if c.type.container:
                exprs.append(f"(e.get({name!r}) or {const_name})")
            elif c.type.nullable:
                exprs.append(f"e.get({name!r})")
            else:
                exprs.append(f"e[{name!r}]")
        elif kind == "pii":
            exprs.append(f"_hash(e.get({c.source[1]!r}))")
        elif kind == "nested":
            rec, sub = c.source[1], c.source[2]
            if c.type.nullable or c.type.container:
                exprs.append(f"((e.get({rec!r}) or {{}}).get({sub!r}){' or ' + const_name if c.type.container else ''})")
            else:
                exprs.append(f"e[{rec!r}][{sub!r}]")
        elif kind == "items":
            name, subs = c.source[1], c.source[2]
            item = "(" + "".join(f"i.get({s!r}), " for s in subs) + ")"
            exprs.append(f"[{item} for i in (e.get({name!r}) or ())]")
        else:  # pragma: no cover
            raise MappingError(f"unknown column source {c.source!r}")
    src = "def _row(e, p, o, ts):\n    return (" + ", ".join(exprs) + ",)\n"
    ns = dict(consts)
    exec(compile(src, f"<row {table.name}/{event_type}>", "exec"), ns)
    return ns["_row"]


@dataclass
class RowMapper:
    """Maps decoded events of one topic to row tuples of its table."""

    table: Table
    hasher: Hasher
    _fns: dict = field(default_factory=dict)

    def __post_init__(self):
        self._fns = {et: _row_function(self.table, et, self.hasher) for et in self.table.event_types}
        self._ts_idx = [i for i, c in enumerate(self.table.columns)
                        if c.type.timestamp and c.source[0] != "meta"]

    def row(self, event: dict, partition: int, offset: int, timestamp_ms: int) -> tuple:
        et = event.get("event_type")
        fn = self._fns.get(et)
        if fn is None:
            raise MappingError(f"event_type {et!r} does not belong on {self.table.topic} "
                               f"(expected one of {', '.join(self.table.event_types)})")
        try:
            return fn(event, partition, offset, timestamp_ms)
        except KeyError as exc:
            raise MappingError(f"{et}: required field {exc.args[0]!r} missing") from None
        except (AttributeError, TypeError) as exc:
            raise MappingError(f"{et}: malformed value: {exc}") from None

    def columns(self, rows: list[tuple]) -> list[list]:
        """Transpose rows into columns; timestamps normalised to epoch ms ints."""
        cols = [list(c) for c in zip(*rows)] if rows else [[] for _ in self.table.columns]
        for i in self._ts_idx:
            col = cols[i]
            if any(v is not None and v.__class__ is not int for v in col):
                cols[i] = [to_epoch_ms(v) for v in col]
        return cols


def mappers(tables: dict[str, Table], hasher: Hasher) -> dict[str, RowMapper]:
    return {topic: RowMapper(t, hasher) for topic, t in tables.items()}
