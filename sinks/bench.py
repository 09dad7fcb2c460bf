"""Sink benchmark (``make bench`` calls :func:`run`): topic -> store rows/s, CPU per row,
and a bare clickhouse-connect insert of the same rows as the ceiling.

Measured: the real sink code path (confluent-kafka consume, telbus.codec decode, row
mapping, offset fence, columnar INSERT into the embedded store with its materialized
views, offset commit) over ``n`` records of ``net.cdr.raw``; then the same rows, already
in Python columns, inserted with nothing but ``client.insert`` in batches of the same size
into a table with the same DDL and no views. Both in this process, same engine.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ensure_records(topic: str, n: int, subscribers: int) -> int:
    """Records in the topic; tops it up from the demo CDR stream when short."""
    from confluent_kafka import TopicPartition

    from telbus import kafka

    c = kafka.consumer(None)
    try:
        md = c.list_topics(topic, timeout=15)
        total = 0
        for p in md.topics[topic].partitions:
            for attempt in range(50):       # a just-created topic may have no leader yet
                try:
                    lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                    break
                except Exception:
                    if attempt == 49:
                        raise
                    time.sleep(0.2)
            total += hi - lo
    finally:
        c.close()
    if total < n:
        from telbus import demo
        from telbus.kafka import Publisher

        pub = Publisher()
        for _topic, key, event in demo.cdr_stream(97, n - total, subscribers):
            pub.send(topic, event, key=key)
        rep = pub.flush(300)
        if rep.failed:
            raise RuntimeError(f"bench load failed: {rep.failed[:3]}")
        total = n
    return total


def run(n: int = 1_000_000, subscribers: int = 20_000, topic: str = "net.cdr.raw",
        batch_rows: int | None = None, batch_ms: int | None = None) -> dict:
    from sinks.sink import Sink, SinkConfig
    from sinks.store import Store
    from telbus import config

    batch_rows = batch_rows or int(os.environ.get("TELBUS_SINK_BATCH_ROWS") or 100_000)
    batch_ms = batch_ms or int(os.environ.get("TELBUS_SINK_BATCH_MS") or 2_000)
    available = _ensure_records(topic, n, subscribers)
    tag = uuid.uuid4().hex[:8]
    store_dir = config.data_dir() / f"bench-sink-{tag}"
    dsn = f"chdb://{store_dir}"
    cfg = SinkConfig(batch_rows=batch_rows, batch_ms=batch_ms, group=f"bench-sink-{tag}",
                     topics=(topic,), serve_query=False, process="bench_sink")
    sink = Sink(cfg, dsn=dsn)
    sink._open_store()
    table = sink.store.tables[topic]
    sink._subscribe()
    # the clock starts with the first record (group join and assignment are not throughput)
    first = sink.consumer.consume(1, 60)
    cpu0, t0 = _cpu(), time.perf_counter()
    for msg in first:
        if msg.error() is None:
            sink.handle(msg, sink.writer._codec().decode)
    stats = sink.run(stop_after=n - len(first), idle_exit_s=30)       # closes consumer and store
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    rows = stats["inserted"]

    # the same rows back as Python columns (timestamps as epoch-ms ints, as the sink has them)
    st = Store(dsn, migrate=False)
    try:
        exprs = [f"toUnixTimestamp64Milli(`{c.name}`)" if c.type.timestamp else f"`{c.name}`"
                 for c in table.columns]
        cols = st.client.query(f"SELECT {', '.join(exprs)} FROM `{table.name}` "
                               "ORDER BY _partition, _offset").result_columns
    finally:
        st.close()
    shutil.rmtree(store_dir, ignore_errors=True)
    # ceiling: bare client.insert of those rows, same batch size, into the same table (with its
    # materialized views) in a fresh store
    bare_dir = config.data_dir() / f"bench-bare-{tag}"
    st = Store(f"chdb://{bare_dir}")
    try:
        names = table.column_names
        types = [c.type.sql() for c in table.columns]
        m = len(cols[0]) if cols else 0
        cpu1, t1 = _cpu(), time.perf_counter()
        for start in range(0, m, batch_rows):
            st.client.insert(table.name, [c[start:start + batch_rows] for c in cols], column_names=names,
                             column_type_names=types, column_oriented=True)
        bare_wall = time.perf_counter() - t1
        bare_cpu = _cpu() - cpu1
    finally:
        st.close()
    shutil.rmtree(bare_dir, ignore_errors=True)
    rps = rows / wall if wall else 0.0
    bare_rps = m / bare_wall if bare_wall else 0.0
    return {
        "topic": topic, "records_in_topic": available, "rows": rows,
        "batch_rows": batch_rows, "batch_ms": batch_ms,
        "fast_path": sink.writer.fast if sink.writer else None,
        "seconds": round(wall, 2), "throughput_rows_per_s": round(rps),
        "cpu_seconds": round(cpu, 2), "cpu_us_per_row": round(cpu / rows * 1e6, 2) if rows else None,
        "bare_insert": {"rows": m, "seconds": round(bare_wall, 2), "throughput_rows_per_s": round(bare_rps),
                        "cpu_us_per_row": round(bare_cpu / m * 1e6, 2) if m else None},
        "ratio_to_bare": round(rps / bare_rps, 3) if bare_rps else None,
        "targets": {"rows_per_s": 100_000, "ratio_to_bare": 0.5},
        "dead_lettered": stats["dlq"], "skipped": stats["skipped"],
        "note": ("sink = consume (confluent-kafka) + framing/fingerprint check + engine-parsed Avro "
                 "(fast path) + fence + one INSERT per batch into net_cdr_raw with its materialized "
                 "views + offsets saved and committed; bare = clickhouse-connect client.insert of the "
                 "same rows already in Python columns into the same table and views, same batch size"),
    }


if __name__ == "__main__":  # pragma: no cover - manual run against a running broker
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000), indent=2))
