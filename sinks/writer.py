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


_UNKNOWN = object()


@dataclass
class Rejected:
    topic: str
    partition: int
    offset: int
    reason: str
    source: object = None       # what the caller queued with the record (the Kafka message)


@dataclass
class FlushResult:
    rows: dict[str, int] = field(default_factory=dict)          # table -> rows inserted
    rejected: list[Rejected] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)     # table -> insert duration

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass
class Batch:
    """Records queued for one flush. A failed flush leaves in it exactly what is still to
    be inserted (and what was rejected so far), so retrying the same batch is safe."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)       # topic -> row tuples
    encoded: dict[str, list[tuple]] = field(default_factory=dict)    # topic -> (p, o, ts, value, source)
    sources: dict[tuple[str, int, int], object] = field(default_factory=dict)  # rows path: (t,p,o)->source
    rejected: list[Rejected] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)            # topic -> prepared Avro container

    def __len__(self) -> int:
        return sum(len(v) for v in self.rows.values()) + sum(len(v) for v in self.encoded.values())


class Writer:
    def __init__(self, store: Store, hasher: Hasher | None = None, codec=None, fast: bool = True):
        self.store = store
        self.codec = codec
        self.fast = fast
        self.hasher = hasher or Hasher()
        self.mappers: dict[str, RowMapper] = {t: RowMapper(tab, self.hasher) for t, tab in store.tables.items()}
        self.batch = Batch()
        self._fence: dict[str, dict[int, int]] = {}
        self._plans: dict[str, dict[bytes, avrofast.AvroPlan | None]] = {}
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

    def _advance_fence(self, topic: str, stored: dict[int, int]) -> None:
        """Raise the fence to ``stored`` (partition -> highest offset now in the store)."""
        fence = self.fence(topic)
        for p, o in stored.items():
            if o > fence.get(p, -1):
                fence[p] = o

    def stored_next_offset(self, topic: str, partition: int) -> int | None:
        """First offset not yet in the store for a partition (None: nothing stored)."""
        last = self.fence(topic).get(partition)
        return None if last is None else last + 1

    # -- queueing --------------------------------------------------------------------
    def table(self, topic: str) -> Table:
        return self.store.tables[topic]

    def add(self, topic: str, event: dict, partition: int, offset: int, timestamp_ms: int,
            source=None) -> bool:
        """Queue one decoded record; False if the store already has it. Raises MappingError."""
        mapper = self.mappers.get(topic)
        if mapper is None:
            raise MappingError(f"no table for topic {topic}")
        last = self.fence(topic).get(partition)
        if last is not None and offset <= last:
            self.skipped += 1
            return False
        row = mapper.row(event, partition, offset, timestamp_ms)
        self.batch.rows.setdefault(topic, []).append(row)
        if source is not None:
            self.batch.sources[(topic, partition, offset)] = source
        return True

    def _codec(self):
        if self.codec is None:
            from telbus.codec import default_codec
            self.codec = default_codec()
        return self.codec

    def plan(self, topic: str, fingerprint: bytes):
        """The fast-path plan for records of this (wire) fingerprint on this topic, or None."""
        plans = self._plans.setdefault(topic, {})
        if fingerprint in plans:
            return plans[fingerprint]
        plan = None
        table = self.store.tables.get(topic)
        fp = int.from_bytes(fingerprint, "little")
        sv = self._codec().catalog.by_fingerprint.get(fp)
        if table is not None and sv is not None and sv.name in table.event_types:
            current = self._codec().catalog.current(sv.name)
            if current is sv and avrofast.eligible(table, sv.name):
                plan = avrofast.plan_for(table, sv.name, sv.json, fp)
        plans[fingerprint] = plan
        return plan

    def add_encoded(self, topic: str, value: bytes, partition: int, offset: int, timestamp_ms: int,
                    source=None):
        """Queue one record without decoding it if the fast path applies (sinks.avrofast).

        Returns True (queued), False (already stored) or None (not eligible: decode it and
        call :meth:`add`).
        """
        if not self.fast or value is None or len(value) < 11 or value[:2] != avrofast.MAGIC:
            return None
        plans = self._plans.get(topic)
        fp = value[2:10]
        plan = plans.get(fp, _UNKNOWN) if plans is not None else _UNKNOWN
        if plan is _UNKNOWN:
            plan = self.plan(topic, fp)
        if plan is None:
            return None
        fence = self._fence.get(topic)
        if fence is None:
            fence = self.fence(topic)
        last = fence.get(partition)
        if last is not None and offset <= last:
            self.skipped += 1
            return False
        enc = self.batch.encoded.get(topic)
        if enc is None:
            enc = self.batch.encoded[topic] = []
        enc.append((partition, offset, timestamp_ms, value, source))
        return True

    @property
    def pending_rows(self) -> int:
        return len(self.batch)

    def discard(self) -> None:
        self.batch = Batch()

    def take(self) -> Batch:
        """Detach the queued records (to flush them while the next batch fills)."""
        b, self.batch = self.batch, Batch()
        return b

    def drop_stored(self, batch: Batch) -> dict[str, int]:
        """Before retrying a failed insert: drop from the batch what the store now holds.

        An INSERT that failed because the store went away (a server killed mid-insert, a
        connection cut before the answer) may have landed all the same: one INSERT is one
        part per table, written whole or not at all. Retrying it blindly would store those
        rows twice, and their materialized views would count them twice. So the stored
        offsets are read again (this raises while the store is still down, which the caller
        counts as one more failed attempt) and what is at or below them leaves the batch.
        Returns rows per table found already stored.
        """
        landed: dict[str, int] = {}
        for topic in sorted(set(batch.encoded) | set(batch.rows)):
            enc, rows = batch.encoded.get(topic) or [], batch.rows.get(topic) or []
            if not enc and not rows:
                continue
            table = self.store.tables[topic]
            stored = self.store.fence(table)
            if not stored:
                continue
            self._advance_fence(topic, stored)
            n = 0
            if enc:
                keep = [r for r in enc if r[1] > stored.get(r[0], -1)]
                if len(keep) != len(enc):
                    n += len(enc) - len(keep)
                    batch.encoded[topic] = keep
                    batch.blobs.pop(topic, None)        # framed for the old content
            if rows:
                pi, oi = self._po[topic]
                keep = [r for r in rows if r[oi] > stored.get(r[pi], -1)]
                n += len(rows) - len(keep)
                batch.rows[topic] = keep
            if n:
                landed[table.name] = n
        return landed

    # -- flushing --------------------------------------------------------------------
    def prepare(self, batch: Batch) -> None:
        """Build the Avro containers of a batch now (pure Python work: the sink does it on
        its main thread so the flush thread only waits on the engine, without the GIL)."""
        for topic, records in batch.encoded.items():
            if not records or batch.rows.get(topic):
                continue
            fp0 = records[0][3][2:10]
            if all(r[3][2:10] == fp0 for r in records):
                records.sort(key=itemgetter(0, 1))
                batch.blobs[topic] = avrofast.container(self.plan(topic, fp0), records)

    def flush(self, batch: Batch | None = None) -> FlushResult:
        """Insert a batch (default: the queued one), one INSERT per table.

        On an exception nothing is lost: the batch keeps what is still to insert and the
        fence is not advanced for it; call again to retry.
        """
        batch = self.batch if batch is None else batch
        result = FlushResult()
        for topic in sorted(batch.encoded):
            records = batch.encoded[topic]
            if not records:
                continue
            blob = batch.blobs.pop(topic, None)     # framed by prepare(): one schema, no rows
            if blob is not None or (not batch.rows.get(topic)
                                    and all(r[3][2:10] == records[0][3][2:10] for r in records)):
                if self._flush_encoded(topic, records, result, blob):
                    batch.encoded[topic] = []
                    continue
            # mixed with decoded rows, several schemas, or refused by the engine: one
            # INSERT through the Python path keeps "one part per table per flush"
            self._encoded_to_rows(topic, records, batch)
            batch.encoded[topic] = []
        for topic in sorted(batch.rows):
            rows = batch.rows[topic]
            if not rows:
                continue
            table = self.store.tables[topic]
            mapper = self.mappers[topic]
            pi, oi = self._po[topic]
            rows.sort(key=itemgetter(pi, oi))
            cols = mapper.columns(rows)
            bad = self._validate(topic, table, rows, cols)
            if bad:
                rows = [r for r in rows if (r[pi], r[oi]) not in bad]
                batch.rows[topic] = rows
                batch.rejected.extend(Rejected(topic, p, o, why, batch.sources.get((topic, p, o)))
                                      for (p, o), why in sorted(bad.items()))
                cols = mapper.columns(rows)
            if rows:
                t0 = time.perf_counter()
                self.store.insert(table, cols)
                result.seconds[table.name] = time.perf_counter() - t0
                result.rows[table.name] = len(rows)
                last: dict[int, int] = {}
                for p, o in zip(cols[pi], cols[oi]):
                    if o > last.get(p, -1):
                        last[p] = o
                self._advance_fence(topic, last)
            batch.rows[topic] = []
        result.rejected = batch.rejected
        batch.rejected = []
        batch.sources = {}
        return result

    def _encoded_to_rows(self, topic: str, records: list[tuple], batch: Batch) -> None:
        """Python path for queued encoded records."""
        codec = self._codec()
        mapper = self.mappers[topic]
        rows = batch.rows.setdefault(topic, [])
        for p, o, ts, value, source in records:
            try:
                rows.append(mapper.row(codec.decode(value), p, o, ts))
                if source is not None:
                    batch.sources[(topic, p, o)] = source
            except MappingError as exc:
                batch.rejected.append(Rejected(topic, p, o, f"cannot map to a row: {exc}", source))
            except ValueError as exc:       # telbus.codec.DecodeError
                batch.rejected.append(Rejected(topic, p, o, f"undecodable: {exc}", source))

    def _flush_encoded(self, topic: str, records: list[tuple], result: FlushResult,
                       blob: bytes | None = None) -> bool:
        """One ``FORMAT Avro`` INSERT; False if the engine refused the data."""
        from sinks.store import INSERT_SETTINGS

        table = self.store.tables[topic]
        if blob is None:
            records.sort(key=itemgetter(0, 1))
            blob = avrofast.container(self.plan(topic, records[0][3][2:10]), records)
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
        self._advance_fence(topic, {r[0]: r[1] for r in records})    # sorted by (partition, offset)
        return True

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
