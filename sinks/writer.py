"""Batches decoded events into columnar inserts, exactly once per Kafka record.

Kafka-free, so the same code is used by the sink loop, the tests and the bench.

Offset fence: for each (topic, partition) the writer knows the highest offset already in
the store (read from the table on first use and after every partition assignment) and
drops records at or below it. Each flush inserts one block per table, rows sorted by
(partition, offset), in one INSERT: a crash leaves, per partition, a prefix of what was
being written, which the fence then skips on restart. This keeps materialized views from
seeing a record twice; ``FINAL`` on the ReplacingMergeTree tables is the second line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from operator import itemgetter

from sinks import avrofast
from sinks.ddl import MappingError, Table
from sinks.pii import Hasher
from sinks.rows import RowMapper
from sinks.store import Store


@dataclass
class Rejected:
    topic: str
    partition: int
    offset: int
    reason: str


@dataclass
class FlushResult:
    rows: dict[str, int] = field(default_factory=dict)          # table -> rows inserted
    rejected: list[Rejected] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)     # table -> insert duration

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class Writer:
    def __init__(self, store: Store, hasher: Hasher | None = None, codec=None, fast: bool = True):
        self.store = store
        self.codec = codec
        self.fast = fast
        #: topic -> [(partition, offset, timestamp_ms, single-object bytes)] for the fast path
        self.avro_pending: dict[str, list[tuple]] = {}
        self._plans: dict[tuple[str, int], avrofast.AvroPlan | None] = {}
        self.hasher = hasher or Hasher()
        self.mappers: dict[str, RowMapper] = {t: RowMapper(tab, self.hasher) for t, tab in store.tables.items()}
        self.pending: dict[str, list[tuple]] = {}
        self._fence: dict[str, dict[int, int]] = {}
        self.skipped = 0          # records dropped by the fence (already stored)
        self._po = {}
        for topic, tab in store.tables.items():
            names = tab.column_names
            self._po[topic] = (names.index("_partition"), names.index("_offset"))
        self._required = {
            topic: [i for i, c in enumerate(tab.columns) if not c.type.nullable and not c.type.container]
            for topic, tab in store.tables.items()
        }

    # -- fence ---------------------------------------------------------------------
    def fence(self, topic: str) -> dict[int, int]:
        f = self._fence.get(topic)
        if f is None:
            f = self._fence[topic] = self.store.fence(self.store.tables[topic])
        return f

    def reset_fence(self, topic: str | None = None) -> None:
        """Forget the cached fence (call on partition assignment): re-read from the store."""
        if topic is None:
            self._fence.clear()
        else:
            self._fence.pop(topic, None)

    def stored_next_offset(self, topic: str, partition: int) -> int | None:
        """First offset not yet in the store for a partition (None: nothing stored)."""
        last = self.fence(topic).get(partition)
        return None if last is None else last + 1

    # -- batching --------------------------------------------------------------------
    def table(self, topic: str) -> Table:
        return self.store.tables[topic]

    def add(self, topic: str, event: dict, partition: int, offset: int, timestamp_ms: int) -> bool:
        """Queue one record; False if the store already has it. Raises MappingError."""
        mapper = self.mappers.get(topic)
        if mapper is None:
            raise MappingError(f"no table for topic {topic}")
        last = self.fence(topic).get(partition)
        if last is not None and offset <= last:
            self.skipped += 1
            return False
        row = mapper.row(event, partition, offset, timestamp_ms)
        self.pending.setdefault(topic, []).append(row)
        return True

    # -- fast path (see sinks.avrofast) -------------------------------------------------
    def _codec(self):
        if self.codec is None:
            from telbus.codec import default_codec
            self.codec = default_codec()
        return self.codec

    def plan(self, topic: str, fingerprint: int):
        """The fast-path plan for records of this fingerprint on this topic, or None."""
        key = (topic, fingerprint)
        if key in self._plans:
            return self._plans[key]
        plan = None
        table = self.store.tables.get(topic)
        sv = self._codec().catalog.by_fingerprint.get(fingerprint)
        if self.fast and table is not None and sv is not None and sv.name in table.event_types:
            current = self._codec().catalog.current(sv.name)
            if current is sv and avrofast.eligible(table, sv.name):
                plan = avrofast.plan_for(table, sv.name, sv.json, fingerprint)
        self._plans[key] = plan
        return plan

    def add_encoded(self, topic: str, value: bytes, partition: int, offset: int, timestamp_ms: int):
        """Queue one record without decoding it if the fast path applies.

        Returns True (queued), False (already stored) or None (not eligible: decode it and
        call :meth:`add`).
        """
        if not self.fast or value is None or len(value) < 11 or value[:2] != avrofast.MAGIC:
            return None
        plan = self.plan(topic, int.from_bytes(value[2:10], "little"))
        if plan is None:
            return None
        last = self.fence(topic).get(partition)
        if last is not None and offset <= last:
            self.skipped += 1
            return False
        self.avro_pending.setdefault(topic, []).append((partition, offset, timestamp_ms, value))
        return True

    @property
    def pending_rows(self) -> int:
        return sum(len(v) for v in self.pending.values()) + sum(len(v) for v in self.avro_pending.values())

    def discard(self) -> None:
        self.pending.clear()
        self.avro_pending.clear()

    def _avro_to_rows(self, topic: str, records: list[tuple], result: "FlushResult") -> None:
        """Python path for queued encoded records (mixed batch, or the engine refused it)."""
        codec = self._codec()
        mapper = self.mappers[topic]
        rows = self.pending.setdefault(topic, [])
        for p, o, ts, value in records:
            try:
                rows.append(mapper.row(codec.decode(value), p, o, ts))
            except MappingError as exc:
                result.rejected.append(Rejected(topic, p, o, f"cannot map to a row: {exc}"))
            except ValueError as exc:       # telbus.codec.DecodeError
                result.rejected.append(Rejected(topic, p, o, f"undecodable: {exc}"))

    def _flush_avro(self, topic: str, records: list[tuple], result: "FlushResult") -> bool:
        """One ``FORMAT Avro`` INSERT; False if the engine refused the data."""
        from sinks.store import INSERT_SETTINGS

        table = self.store.tables[topic]
        plan = self.plan(topic, int.from_bytes(records[0][3][2:10], "little"))
        records.sort(key=itemgetter(0, 1))
        blob = avrofast.container(plan, records)
        t0 = time.perf_counter()
        try:
            self.store.client.raw_insert(table.name, None, blob, fmt="Avro", settings=INSERT_SETTINGS)
        except Exception:
            # refused: the data (then the Python path finds and dead-letters the bad
            # records) or the store (then the Python path's INSERT fails too: retry)
            if not self.store.ping():
                raise
            return False
        result.seconds[table.name] = time.perf_counter() - t0
        result.rows[table.name] = len(records)
        fence = self.fence(topic)
        for p, o, _ts, _v in records:
            if o > fence.get(p, -1):
                fence[p] = o
        return True

    def flush(self) -> FlushResult:
        """Insert everything queued (one INSERT per table). On error nothing is forgotten:
        the pending rows stay queued for a retry, and the fence is not advanced."""
        result = FlushResult()
        for topic in sorted(self.avro_pending):
            records = self.avro_pending[topic]
            if not records:
                continue
            fps = {r[3][2:10] for r in records} if len(records) < 64 else None
            single = (fps is not None and len(fps) == 1) or (
                fps is None and all(r[3][2:10] == records[0][3][2:10] for r in records))
            if single and not self.pending.get(topic):
                if self._flush_avro(topic, records, result):
                    self.avro_pending[topic] = []
                    continue
            # mixed with decoded rows, several schemas, or refused by the engine: one
            # INSERT through the Python path keeps "one part per table per flush"
            self._avro_to_rows(topic, records, result)
            self.avro_pending[topic] = []
        for topic in sorted(self.pending):
            rows = self.pending[topic]
            if not rows:
                continue
            table = self.store.tables[topic]
            mapper = self.mappers[topic]
            pi, oi = self._po[topic]
            rows.sort(key=itemgetter(pi, oi))
            cols = mapper.columns(rows)
            bad = self._validate(topic, table, rows, cols)
            if bad:
                keep = [r for r in rows if (r[pi], r[oi]) not in bad]
                result.rejected.extend(Rejected(topic, p, o, why) for (p, o), why in sorted(bad.items()))
                rows = keep
                cols = mapper.columns(rows)
            if rows:
                t0 = time.perf_counter()
                self.store.insert(table, cols)
                result.seconds[table.name] = time.perf_counter() - t0
                result.rows[table.name] = len(rows)
                fence = self.fence(topic)
                # rows are sorted: the last row of each partition has its highest offset
                last: dict[int, int] = {}
                for p, o in zip(cols[pi], cols[oi]):
                    last[p] = o
                for p, o in last.items():
                    if o > fence.get(p, -1):
                        fence[p] = o
            self.pending[topic] = []
        return result

    def _validate(self, topic: str, table: Table, rows, cols) -> dict[tuple[int, int], str]:
        """Rows that would make the whole INSERT fail (a required value is missing)."""
        bad: dict[tuple[int, int], str] = {}
        pi, oi = self._po[topic]
        for i in self._required[topic]:
            col = cols[i]
            if None in col:
                name = table.columns[i].name
                for r in rows:
                    if r[i] is None:
                        bad.setdefault((r[pi], r[oi]), f"{r[0]}: required field {name!r} is null")
        return bad

