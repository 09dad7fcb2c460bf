"""``telbus sink``: every contract topic into its ClickHouse table.

Loop: consume (confluent-kafka, read_committed) -> decode (telbus.codec) -> row ->
columnar batch per table -> INSERT -> DLQ records flushed -> offsets committed. A batch
is flushed when it holds ``TELBUS_SINK_BATCH_ROWS`` rows or its oldest record waited
``TELBUS_SINK_BATCH_MS``. Offsets are committed only after the insert returned (the
part is written) and the dead letters of the batch are acknowledged by the broker.

Exactly-once effect: on every partition assignment the sink positions each partition
from the store itself: after the highest stored offset, or after the offset it recorded
in ``_telbus_sink_offsets`` with its last flush (covers dead letters at the tail),
whichever is further; the writer drops anything at or below the stored maximum (see
:mod:`sinks.writer`). Kafka offsets are still committed (lag monitoring, operators), but
the store is the truth: a wiped or restored store re-imports what it lacks, a lost or
reset consumer group does not insert twice.

Bad records (undecodable, not mappable) go to ``<topic>.dlq`` with the original bytes and
``telbus.error`` / ``telbus.stage`` headers (telbus.dlq). Store outage: the batch is
kept, partitions are paused (the consumer stays in its group), and the insert is retried
with exponential backoff; ``telbus_sink_insert_retries_total`` and
``telbus_sink_insert_failures_total`` show it, ``telbus_sink_store_up`` is 0 meanwhile.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from sinks import avrofast

log = logging.getLogger("telbus.sink")

GROUP = "telbus-sink"
STAGE = "sink"

ROWS_INSERTED = Counter("telbus_sink_rows_inserted_total", "Rows inserted into the store", ["table"])
INSERT_SECONDS = Histogram("telbus_sink_insert_seconds", "Duration of one INSERT", ["table"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_ROWS = Histogram("telbus_sink_batch_rows", "Rows per flushed batch",
                       buckets=(1, 10, 100, 1000, 5000, 10000, 50000, 100000, 500000))
INSERT_RETRIES = Counter("telbus_sink_insert_retries_total", "Inserts retried after a store error")
INSERT_FAILURES = Counter("telbus_sink_insert_failures_total", "Store errors (insert, fence, connect)",
                          ["stage"])
SKIPPED = Counter("telbus_sink_skipped_total", "Re-delivered records already in the store", ["topic"])
STORE_UP = Gauge("telbus_sink_store_up", "1 while the last store operation succeeded")
COMMITTED = Gauge("telbus_sink_committed_offset", "Last committed offset", ["topic", "partition"])
QUERIES = Counter("telbus_sink_queries_total", "Queries served by the read-only endpoint")


#: seconds between full garbage collections in the consume loop (see Sink.run)
GC_EVERY_S = 30.0


def _int_env(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


@dataclass
class SinkConfig:
    batch_rows: int = 50_000
    batch_ms: int = 1_000
    group: str = GROUP
    topics: tuple[str, ...] | None = None      # default: every contract topic
    serve_query: bool = True
    process: str = "sink"
    max_backoff_s: float = 10.0

    @classmethod
    def from_env(cls, **overrides) -> "SinkConfig":
        c = cls(batch_rows=_int_env("TELBUS_SINK_BATCH_ROWS", 50_000),
                batch_ms=_int_env("TELBUS_SINK_BATCH_MS", 1_000),
                group=os.environ.get("TELBUS_SINK_GROUP") or GROUP)
        for k, v in overrides.items():
            if v is not None:
                setattr(c, k, v)
        return c


class Backoff:
    def __init__(self, first: float = 0.2, cap: float = 10.0):
        first = min(first, cap)
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.first


_UNKNOWN = object()


class _Flight:
    """One batch being flushed on the background thread."""

    def __init__(self, batch, offsets: dict, dlq: int, max_attempts: int | None):
        self.batch = batch
        self.offsets = offsets
        self.dlq = dlq
        self.max_attempts = max_attempts
        self.result = None
        self.error: BaseException | None = None
        self.abort = threading.Event()
        self.retrying = False
        self.thread: threading.Thread | None = None


class Sink:
    def __init__(self, config: SinkConfig | None = None, dsn: str | None = None):
        from sinks.store import default_dsn

        self.cfg = config or SinkConfig.from_env()
        self.dsn = dsn or default_dsn()
        self.stop_event = threading.Event()
        self.store = None
        self.writer = None
        self.consumer = None
        self.producer = None
        self.query_server = None
        self.query_url: str | None = None
        self._next: dict[tuple[str, int], int] = {}     # offsets to commit after the flush
        self._batch_dlq = 0
        self._flight: _Flight | None = None
        self._ready: _Flight | None = None          # detached, framed, not yet inserting
        self._first_at: float | None = None
        self._paused = False
        self._assigned: list = []
        self._decode = None
        self.refused: str | None = None
        self.stats = {"inserted": 0, "dlq": 0, "skipped": 0, "batches": 0, "retries": 0}

    # -- setup -------------------------------------------------------------------------
    def topics(self) -> list[str]:
        from sinks.ddl import contract_topics

        return list(self.cfg.topics or contract_topics())

    def _open_store(self):
        from sinks.store import Store, StoreBusy
        from sinks.writer import Writer

        backoff = Backoff(cap=self.cfg.max_backoff_s)
        while not self.stop_event.is_set():
            try:
                self.store = Store(self.dsn)
                self.writer = Writer(self.store, fast=os.environ.get("TELBUS_SINK_FAST", "1") != "0")
                STORE_UP.set(1)
                return
            except StoreBusy:
                raise
            except Exception as exc:
                INSERT_FAILURES.labels("connect").inc()
                STORE_UP.set(0)
                d = backoff.next()
                log.warning("store %s unavailable (%s); retrying in %.1fs", self._dsn_shown(), exc, d)
                self.stop_event.wait(d)

    def _heal_views(self) -> None:
        """Repair views a crash left short, before consuming anything.

        A materialized view is filled by the same INSERT as its source table, but not
        atomically with it: a kill -9 between the two leaves source rows whose view rows
        are missing, and the offset fence (rightly) never re-inserts them. Auditing every
        view against its recomputation from the deduplicated tables at start-up, and
        rebuilding on a difference, closes that gap at the cost of one scan per start.
        """
        from sinks import views

        if os.environ.get("TELBUS_SINK_HEAL_VIEWS", "1") == "0":
            return
        try:
            bad = [v for v, r in views.audit(self.store.client).items() if not r["ok"]]
        except Exception as exc:   # an audit failure must not keep the sink from running
            log.warning("view audit at start failed: %s", exc)
            return
        if bad:
            log.warning("views differ from their sources after a restart (%s): rebuilding", ", ".join(bad))
            for target in views.TARGETS:
                views.rebuild(self.store.client, target)

    def _dsn_shown(self) -> str:
        from sinks.store import redact_dsn

        return redact_dsn(self.dsn)

    def _start_query_server(self) -> None:
        from sinks.queryserver import QueryServer
        from sinks.store import is_embedded
        from telbus import config

        if not self.cfg.serve_query or not is_embedded(self.dsn):
            return   # a server store is queried directly by everyone
        self.query_server = QueryServer(self.dsn, run_dir=config.run_dir())
        self.query_url = self.query_server.start()
        log.info("read-only query endpoint at %s", self.query_url)

    def _subscribe(self) -> None:
        from telbus import kafka

        self.consumer = kafka.consumer(self.cfg.group, **{
            "enable.partition.eof": False,
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 262144,
            # librdkafka postpones a partition's next fetch by this much once its local
            # queue is full; the default (1 s) left the sink idle for up to a second after
            # draining a batch's worth (measured in make bench)
            "fetch.queue.backoff.ms": 20,
            "error_cb": self._on_kafka_error,
        })
        self.producer = kafka.producer(error_cb=self._on_kafka_error)
        self.consumer.subscribe(self.topics(), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def _on_kafka_error(self, err) -> None:
        """Refused credentials or TLS: stop with the reason (exit 1) instead of retrying
        several times a second forever; anything else librdkafka retries by itself."""
        from telbus import kafka

        reason = kafka.refusal(err)
        if reason and self.refused is None:
            self.refused = reason
            log.error("Kafka refused the sink's connection (%s); stopping", reason)
            self.stop_event.set()

    # -- rebalance ---------------------------------------------------------------------
    def _on_assign(self, consumer, partitions) -> None:
        """Position every partition from the store: after the highest stored offset or the
        offset the sink last recorded in the store (dead letters, skipped tails), whichever
        is further. The store, not the consumer group, is the truth: a store restored or
        wiped re-imports, a lost group does not re-insert."""
        from confluent_kafka import OFFSET_BEGINNING

        from telbus import metrics

        metrics.REBALANCES.labels(self.cfg.process).inc()
        self.writer.reset_fence()
        backoff = Backoff(cap=self.cfg.max_backoff_s)
        saved: dict = {}
        while not self.stop_event.is_set():
            try:
                saved = self.store.load_offsets()
                for tp in partitions:
                    self.writer.fence(tp.topic)
                STORE_UP.set(1)
                break
            except Exception as exc:
                INSERT_FAILURES.labels("fence").inc()
                STORE_UP.set(0)
                d = backoff.next()
                log.warning("reading the stored offsets failed (%s); retrying in %.1fs", exc, d)
                self.stop_event.wait(d)
        for tp in partitions:
            stored = self.writer.stored_next_offset(tp.topic, tp.partition)
            rec = saved.get((tp.topic, tp.partition))
            start = max([o for o in (stored, rec) if o is not None], default=None)
            tp.offset = start if start is not None else OFFSET_BEGINNING
        consumer.assign(partitions)
        self._assigned = list(partitions)
        self._paused = False
        log.info("assigned %d partitions", len(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        """Finish what is in flight, flush what is queued (bounded), then let go."""
        try:
            self._wait_flight(abort_after_s=30.0)
            ready, self._ready = self._ready, None
            if ready is not None:
                self._launch(ready)
                self._wait_flight(abort_after_s=30.0)
            if self.writer is not None and (self.writer.pending_rows or self._next):
                self._start_flush(max_attempts=3)
                self._wait_flight(abort_after_s=30.0)
        except Exception as exc:
            log.warning("flush on revoke failed (%s): the next owner re-reads the batch", exc)
        self._reset_batch()
        try:
            consumer.unassign()
        except Exception:
            pass
        self._assigned = []

    # -- batch -------------------------------------------------------------------------
    def _reset_batch(self) -> None:
        if self.writer:
            self.writer.discard()
            self.writer.reset_fence()
        self._ready = None
        self._next = {}
        self._batch_dlq = 0
        self._first_at = None

    def _dead_letter(self, msg, reason: str) -> None:
        from telbus import dlq

        while True:
            try:
                dlq.send(self.producer, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                         STAGE, reason, original_headers=msg.headers())
                break
            except BufferError:
                self.producer.poll(0.1)
        self._batch_dlq += 1
        self.stats["dlq"] += 1

    def handle(self, msg, decode) -> None:
        """One Kafka record into the batch (or the DLQ)."""
        topic, p, o = msg.topic(), msg.partition(), msg.offset()
        self._next[(topic, p)] = o + 1
        if self._first_at is None:
            self._first_at = time.monotonic()
        value = msg.value()
        ts_type, ts = msg.timestamp()
        if not ts_type or ts < 0:
            ts = 0
        queued = self.writer.add_encoded(topic, value, p, o, ts, msg)
        if queued is None:
            queued = self._add_decoded(msg, topic, value, p, o, ts, decode)
        if queued is False:
            SKIPPED.labels(topic).inc()
            self.stats["skipped"] += 1

    def handle_many(self, msgs, decode) -> dict[str, int]:
        """:meth:`handle` for a list of messages, with the fast path inlined: the hot loop.
        Returns records per topic.

        ``consume`` returns records in runs of one partition, so what depends only on the
        partition (the fence, the batch list, where to commit) is looked up once per run,
        and the fast-path plan once per run of one schema (the 10-byte header repeats).
        """
        from confluent_kafka import KafkaError

        w = self.writer
        nxt = self._next
        per_topic: dict[str, int] = {}
        if self._first_at is None:
            self._first_at = time.monotonic()
        fast = w.fast
        plans_all = w._plans
        encoded = w.batch.encoded
        skipped = 0
        run_topic, run_p, run_n, run_o = None, -1, 0, -1
        head, plan = None, None       # single-object header (magic + fingerprint) and its plan
        fence_last, lst = _UNKNOWN, None
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic = msg.topic()
            p = msg.partition()
            o = msg.offset()
            if p != run_p or topic != run_topic:          # a new run of one partition
                if run_n:
                    nxt[(run_topic, run_p)] = run_o + 1
                    per_topic[run_topic] = per_topic.get(run_topic, 0) + run_n
                run_topic, run_p, run_n = topic, p, 0
                head, plan, fence_last, lst = None, None, _UNKNOWN, None
            run_n += 1
            run_o = o
            value = msg.value()
            ts_type, ts = msg.timestamp()
            if not ts_type or ts < 0:
                ts = 0
            if fast and value is not None and len(value) > 10:
                if head is None or not value.startswith(head):
                    head = value[:10]
                    if head.startswith(avrofast.MAGIC):
                        plans = plans_all.get(topic)
                        plan = plans.get(head[2:], _UNKNOWN) if plans is not None else _UNKNOWN
                        if plan is _UNKNOWN:
                            plan = w.plan(topic, head[2:])
                    else:
                        plan = None
                if plan is not None:
                    if fence_last is _UNKNOWN:
                        fence_last = w.fence(topic).get(p)
                        lst = encoded.get(topic)
                        if lst is None:
                            lst = encoded[topic] = []
                    if fence_last is not None and o <= fence_last:
                        skipped += 1
                        SKIPPED.labels(topic).inc()
                        continue
                    lst.append((p, o, ts, value, msg))
                    continue
            if self._add_decoded(msg, topic, value, p, o, ts, decode) is False:
                skipped += 1
                SKIPPED.labels(topic).inc()
        if run_n:
            nxt[(run_topic, run_p)] = run_o + 1
            per_topic[run_topic] = per_topic.get(run_topic, 0) + run_n
        if skipped:
            w.skipped += skipped
            self.stats["skipped"] += skipped
        return per_topic

    def _add_decoded(self, msg, topic, value, p, o, ts, decode):
        from sinks.ddl import MappingError
        from telbus.codec import DecodeError

        try:
            event = decode(value)
        except DecodeError as exc:
            self._dead_letter(msg, f"undecodable: {exc}")
            return None
        try:
            return self.writer.add(topic, event, p, o, ts, msg)
        except MappingError as exc:
            self._dead_letter(msg, f"cannot map to a row: {exc}")
            return None

    def _due(self) -> bool:
        if self._first_at is None:
            return False
        if self.writer.pending_rows >= self.cfg.batch_rows:
            return True
        return (time.monotonic() - self._first_at) * 1000 >= self.cfg.batch_ms

    def _pause(self, on: bool) -> None:
        if on == self._paused or not self._assigned or self.consumer is None:
            return
        try:
            (self.consumer.pause if on else self.consumer.resume)(self._assigned)
            self._paused = on
        except Exception as exc:  # pragma: no cover
            log.debug("pause/resume: %s", exc)

    # -- flushing: one batch in flight while the next one fills ------------------------
    def _start_flush(self, max_attempts: int | None = None) -> None:
        self._launch(self._detach(max_attempts))

    def _detach(self, max_attempts: int | None = None) -> _Flight:
        """Take the queued batch with the offsets it covers and frame it (pure Python, on
        the main thread, so the flush thread only waits on the engine, without the GIL)."""
        batch = self.writer.take()
        self.writer.prepare(batch)
        flight = _Flight(batch, self._next, self._batch_dlq, max_attempts)
        self._next = {}
        self._batch_dlq = 0
        self._first_at = None
        return flight

    def _launch(self, flight: _Flight) -> None:
        """Insert a detached batch on a background thread (the engine works without the
        GIL, so consuming the next batch overlaps the insert)."""
        flight.thread = threading.Thread(target=self._flush_worker, args=(flight,), name="telbus-sink-flush",
                                         daemon=True)
        self._flight = flight
        flight.thread.start()

    def _flush_due(self) -> None:
        """Frame the due batch while the engine still inserts the previous one (measured in
        make bench: framing 100,000 rows takes ~0.09 s, a quarter of their insert), then
        insert it once that one is done."""
        ready = self._ready = self._detach()
        self._wait_flight()
        if self._ready is ready:        # not flushed by a rebalance meanwhile
            self._ready = None
            self._launch(ready)

    def _flush_worker(self, flight: "_Flight") -> None:
        """Insert (retrying), dead-letter what the store refused, make every dead letter
        durable, record the offsets in the store. The Kafka commit is done by the main
        thread (the consumer is not shared) once this returns."""
        backoff = Backoff(cap=self.cfg.max_backoff_s)
        attempts = 0
        try:
            while True:
                try:
                    # a failed INSERT may have landed: what the store now holds is not retried
                    landed = self.writer.drop_stored(flight.batch) if attempts else {}
                    flight.result = self.writer.flush(flight.batch)
                    for table, n in landed.items():
                        flight.result.rows[table] = flight.result.rows.get(table, 0) + n
                    STORE_UP.set(1)
                    if attempts:
                        # a store killed mid-INSERT may hold a source part without all
                        # of its view parts: same check as after a restart of the sink
                        self._heal_views()
                    break
                except Exception as exc:
                    attempts += 1
                    INSERT_FAILURES.labels("insert").inc()
                    STORE_UP.set(0)
                    if flight.abort.is_set() or (flight.max_attempts is not None and attempts >= flight.max_attempts) \
                            or (self.stop_event.is_set() and attempts >= 3):
                        raise
                    INSERT_RETRIES.inc()
                    self.stats["retries"] += 1
                    flight.retrying = True
                    d = backoff.next()
                    log.warning("insert failed (%s); retry %d in %.1fs", exc, attempts, d)
                    flight.abort.wait(d)
                    if attempts % 5 == 0:
                        try:
                            self._reopen_store()
                        except Exception as exc2:
                            log.warning("reconnect failed: %s", exc2)
            for r in flight.result.rejected:
                if r.source is not None:
                    self._dead_letter_counted(r.source, f"cannot insert: {r.reason}")
                    flight.dlq += 1
                else:  # pragma: no cover - every queued record carries its message
                    log.error("rejected %s[%d]@%d without its message: %s", r.topic, r.partition, r.offset,
                              r.reason)
            if flight.dlq and self.producer is not None:
                left = self.producer.flush(30)
                if left:
                    raise RuntimeError(f"{left} dead letter(s) not acknowledged; offsets not recorded")
            backoff.reset()
            while flight.offsets:
                try:
                    self.store.save_offsets(flight.offsets)
                    break
                except Exception as exc:
                    INSERT_FAILURES.labels("offsets").inc()
                    attempts += 1
                    if flight.abort.is_set() or self.stop_event.is_set() or flight.max_attempts is not None:
                        raise
                    INSERT_RETRIES.inc()
                    d = backoff.next()
                    log.warning("saving offsets failed (%s); retry in %.1fs", exc, d)
                    flight.abort.wait(d)
        except BaseException as exc:  # reported to the main thread
            flight.error = exc

    def _dead_letter_counted(self, msg, reason: str) -> None:
        from telbus import dlq

        while True:
            try:
                dlq.send(self.producer, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                         STAGE, reason, original_headers=msg.headers())
                break
            except BufferError:
                self.producer.poll(0.1)
        self.stats["dlq"] += 1

    def _finish_flight(self, flight: "_Flight") -> None:
        """Main thread, after the worker returned: metrics and the Kafka offset commit."""
        from confluent_kafka import KafkaException, TopicPartition

        self._flight = None
        if flight.error is not None:
            raise flight.error
        res = flight.result
        for table, n in res.rows.items():
            ROWS_INSERTED.labels(table).inc(n)
            INSERT_SECONDS.labels(table).observe(res.seconds.get(table, 0.0))
        if res.total:
            BATCH_ROWS.observe(res.total)
        self.stats["inserted"] += res.total
        self.stats["batches"] += 1
        if flight.offsets and self.consumer is not None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(flight.offsets.items())]
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # the rows and the offsets are in the store: a re-delivery is harmless
                log.warning("offset commit failed (%s); the store's offsets cover it", exc)
            for (t, p), o in flight.offsets.items():
                COMMITTED.labels(t, str(p)).set(o)

    def _wait_flight(self, abort_after_s: float | None = None) -> None:
        """Block until the batch in flight is done, polling so the consumer stays in its
        group (partitions paused meanwhile)."""
        flight = self._flight
        if flight is None:
            return
        t0 = time.monotonic()
        while flight.thread.is_alive():
            flight.thread.join(0.1)
            if abort_after_s is not None and time.monotonic() - t0 > abort_after_s:
                flight.abort.set()
            if flight.retrying and self.consumer is not None and flight.thread.is_alive():
                # an outage: stop fetching (pausing drops the prefetched records, so it is
                # not done for an ordinary wait) and poll so the consumer keeps its group
                self._pause(True)
                msg = self.consumer.poll(0)
                if msg is not None and msg.error() is None and self._decode is not None:
                    self.handle(msg, self._decode)      # fetched before the pause took effect
        self._pause(False)
        if self._flight is flight:      # a rebalance polled meanwhile may have finished it
            self._finish_flight(flight)

    def _flush(self, max_attempts: int | None = None) -> None:
        """Synchronous flush of everything (in flight and queued)."""
        self._wait_flight()
        if self.writer.pending_rows or self._next:
            self._start_flush(max_attempts)
            self._wait_flight()

    def _reopen_store(self) -> None:
        from sinks.store import Store

        store = Store(self.dsn, tables=self.store.tables)
        self.store = store
        self.writer.store = store

    def _update_lag(self) -> None:
        from telbus import metrics

        if not self._assigned or self.consumer is None:
            return
        try:
            positions = self.consumer.position(self._assigned)
        except Exception:
            return
        for tp in positions:
            try:
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
            except Exception:
                continue
            if hi is None or hi < 0:
                continue
            pos = tp.offset if tp.offset >= 0 else lo
            metrics.CONSUMER_LAG.labels(self.cfg.group, tp.topic, str(tp.partition)).set(max(0, hi - pos))

    # -- main --------------------------------------------------------------------------
    def start(self) -> None:
        """Open the store, serve queries and metrics, join the group; mark ready."""
        from telbus import metrics, stack

        self._open_store()
        if self.stop_event.is_set():
            return
        self._heal_views()
        self._start_query_server()
        url = metrics.serve(self.cfg.process)
        log.info("metrics at %s", url)
        if self.query_url:
            metrics.register_endpoint(self.cfg.process, "query", self.query_url)
        self._subscribe()
        stack.mark_ready(self.cfg.process)

    def run(self, idle_exit_s: float | None = None, stop_after: int | None = None) -> dict:
        """Consume until stopped (or idle for ``idle_exit_s``, or ``stop_after`` records
        handled: the bench); returns counters."""
        from telbus import codec, metrics

        decode = self._decode = codec.default_codec().decode
        consumed = metrics.EVENTS_CONSUMED
        last_lag = 0.0
        handled = 0
        last_msg = time.monotonic()
        # Garbage collection on our terms: the loop allocates ~10 objects per record and
        # none of them in reference cycles (reference counting frees them), but CPython's
        # automatic collector traverses the whole batch in flight again and again (measured
        # in make bench: 11 -> 7 us of CPU per row without it). What start-up built is
        # frozen out of every collection; a full collection every GC_EVERY_S frees any
        # cycle all the same (exceptions with tracebacks, rebalances).
        gc.collect()
        gc.freeze()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        last_gc = time.monotonic()
        try:
            while not self.stop_event.is_set():
                want = max(1, min(10_000, self.cfg.batch_rows - self.writer.pending_rows))
                if stop_after is not None:
                    # the bench knows how many records there are: asking for more would make
                    # the last call wait out the batch timer for records that never come
                    want = max(1, min(want, stop_after - handled))
                if self._first_at is None:
                    timeout = 0.5
                else:
                    timeout = max(0.0, self.cfg.batch_ms / 1000 - (time.monotonic() - self._first_at))
                msgs = self.consumer.consume(want, timeout)
                if msgs:
                    last_msg = time.monotonic()
                    per_topic = self.handle_many(msgs, decode)
                    for t, n in per_topic.items():
                        consumed.labels(self.cfg.process, t).inc(n)
                        handled += n
                    if stop_after is not None and handled >= stop_after:
                        break
                if self._flight is not None and not self._flight.thread.is_alive():
                    self._finish_flight(self._flight)
                if self._due():
                    self._flush_due()
                now = time.monotonic()
                if now - last_lag > 5:
                    self._update_lag()
                    last_lag = now
                if now - last_gc > GC_EVERY_S:
                    gc.collect()
                    last_gc = now
                if self.query_server is not None and self.query_server._httpd is not None:
                    q = self.query_server._httpd.queries
                    if q:
                        QUERIES.inc(q)
                        self.query_server._httpd.queries = 0
                if idle_exit_s is not None and now - last_msg > idle_exit_s and not self._next \
                        and self._flight is None:
                    break
            self._wait_flight(abort_after_s=30.0)
            if self._next or (self.writer and self.writer.pending_rows):
                self._start_flush(max_attempts=5)
                self._wait_flight(abort_after_s=60.0)
        finally:
            if gc_was_enabled:
                gc.enable()
            gc.unfreeze()
            self.close()
        return dict(self.stats)

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception:
                pass
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.flush(10)
            except Exception:
                pass
            self.producer = None
        if self.query_server is not None:
            self.query_server.stop()
            self.query_server = None
        if self.store is not None:
            self.store.close()
            self.store = None


def main(batch_rows: int | None = None, batch_ms: int | None = None, serve_query: bool | None = None,
         group: str | None = None) -> int:
    from telbus import config

    logging.basicConfig(level=os.environ.get("TELBUS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    process = config.env("TELBUS_PROCESS_NAME", "sink")
    cfg = SinkConfig.from_env(batch_rows=batch_rows, batch_ms=batch_ms, group=group, process=process)
    if serve_query is not None:
        cfg.serve_query = serve_query
    sink = Sink(cfg)

    def _stop(signum, frame):
        sink.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sink.start()
    except Exception:
        sink.close()
        raise
    log.info("sink %s: store %s, topics %d, batch %d rows / %d ms", process, sink._dsn_shown(),
             len(sink.topics()), cfg.batch_rows, cfg.batch_ms)
    stats = sink.run()
    log.info("sink stopped: %s", stats)
    return 1 if sink.refused else 0
