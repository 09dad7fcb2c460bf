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
    def __init__(self, store: Store, hasher: Hasher | None = None):
        self.store = store
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

    @property
    def pending_rows(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def discard(self) -> None:
        self.pending.clear()

    def flush(self) -> FlushResult:
        """Insert everything queued (one INSERT per table). On error nothing is forgotten:
        the pending rows stay queued for a retry, and the fence is not advanced."""
        result = FlushResult()
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
