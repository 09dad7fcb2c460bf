"""``telbus audit sink``: Kafka records vs ClickHouse rows, per topic and partition.

For every partition: the records in Kafka (counted by reading offsets, so transaction
markers and compaction gaps are not miscounted), the records the sink dead-lettered
(``<topic>.dlq``, by the ``telbus.original.*`` headers), the rows stored (``FINAL``:
each Kafka record once) and the raw row count (a difference is a re-delivery the
ReplacingMergeTree has not merged yet; harmless). The invariant checked: every record
below the sink group's committed offset is stored or dead-lettered (commit only after a
durable insert), and nothing is stored that Kafka does not have (compacted topics
excepted: compaction may remove records after they were stored). Then every view is
compared with its recomputation from the ``FINAL`` tables.

Queries go through the running sink's read-only endpoint when it owns the embedded store.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field


class _Result:
    def __init__(self, rows):
        self.result_rows = rows


class EndpointClient:
    """``query(sql).result_rows`` over :func:`sinks.queryserver.query_result`."""

    def __init__(self, limit: int = 1_000_000):
        self.limit = limit

    def query(self, sql: str) -> _Result:
        from sinks.queryserver import query_result

        return _Result([tuple(r) for r in query_result(sql, limit=self.limit)["rows"]])


@dataclass
class PartitionReport:
    partition: int
    kafka_records: int
    kafka_end: int
    committed: int | None
    stored: int
    stored_raw: int
    dead_lettered: int
    below_commit_kafka: int = 0
    below_commit_accounted: int = 0
    behind: int = 0
    problems: list[str] = field(default_factory=list)


def _read_offsets(topic: str, timeout: float = 60.0):
    """{partition: sorted offsets} of every record now in the topic (values not decoded)."""
    from confluent_kafka import KafkaError, TopicPartition

    from telbus import kafka

    c = kafka.consumer(None, **{"enable.partition.eof": True})
    try:
        md = c.list_topics(topic, timeout=15)
        if topic not in md.topics or md.topics[topic].error is not None:
            return None, {}
        parts = sorted(md.topics[topic].partitions)
        ends = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            ends[p] = (lo, hi)
        offsets: dict[int, list[int]] = {p: [] for p in parts}
        want = [p for p in parts if ends[p][1] > ends[p][0]]
        if want:
            c.assign([TopicPartition(topic, p, ends[p][0]) for p in want])
            done = set()
            deadline = time.monotonic() + timeout
            while len(done) < len(want) and time.monotonic() < deadline:
                for msg in c.consume(10_000, 0.5):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            done.add(msg.partition())
                        continue
                    offsets[msg.partition()].append(msg.offset())
                    if msg.offset() + 1 >= ends[msg.partition()][1]:
                        done.add(msg.partition())
        return ends, offsets
    finally:
        c.close()


def _dead_letters(topic: str) -> dict[int, list[int]]:
    from confluent_kafka import KafkaError, TopicPartition

    from telbus import dlq, kafka

    out: dict[int, list[int]] = {}
    c = kafka.consumer(None, **{"enable.partition.eof": True})
    try:
        d = dlq.dlq_topic(topic)
        md = c.list_topics(d, timeout=15)
        if d not in md.topics or md.topics[d].error is not None:
            return out
        parts = []
        for p in md.topics[d].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(d, p), timeout=15)
            if hi > lo:
                parts.append((p, lo, hi))
        if not parts:
            return out
        c.assign([TopicPartition(d, p, lo) for p, lo, _ in parts])
        ends = {p: hi for p, _, hi in parts}
        done = set()
        deadline = time.monotonic() + 60
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in c.consume(10_000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition())
                    continue
                h = {k: (v.decode() if v else "") for k, v in (msg.headers() or [])}
                if h.get(dlq.STAGE) == "sink" and h.get(dlq.ORIGINAL_TOPIC) == topic:
                    out.setdefault(int(h[dlq.ORIGINAL_PARTITION]), []).append(int(h[dlq.ORIGINAL_OFFSET]))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return out
    finally:
        c.close()


def _committed(topic: str, partitions, group: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    from telbus import kafka

    c = kafka.consumer(group)
    try:
        res = c.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        return {tp.partition: tp.offset for tp in res if tp.offset >= 0}
    finally:
        c.close()


def audit_topic(topic: str, client, group: str) -> dict:
    from sinks.ddl import table_name

    import topics as topic_catalog

    compacted = "compact" in topic_catalog.catalog()[topic].config.get("cleanup.policy", "")
    ends, offsets = _read_offsets(topic)
    if ends is None:
        return {"topic": topic, "ok": False, "problems": ["topic does not exist"], "partitions": []}
    t = table_name(topic)
    stored = {int(p): (int(n), int(lo), int(hi)) for p, n, lo, hi in client.query(
        f"SELECT _partition, count(), min(_offset), max(_offset) FROM `{t}` FINAL GROUP BY _partition").result_rows}
    raw = {int(p): int(n) for p, n in client.query(
        f"SELECT _partition, count() FROM `{t}` GROUP BY _partition").result_rows}
    dead = _dead_letters(topic)
    committed = _committed(topic, list(ends), group)
    parts = []
    for p in sorted(ends):
        offs = offsets.get(p, [])
        n_stored = stored.get(p, (0, 0, -1))[0]
        dl = sorted(set(dead.get(p, [])))
        rep = PartitionReport(p, len(offs), ends[p][1], committed.get(p), n_stored, raw.get(p, 0), len(dl))
        c = committed.get(p)
        if c is not None:
            below = [o for o in offs if o < c]
            rep.below_commit_kafka = len(below)
            n_below = int(client.query(
                f"SELECT count() FROM `{t}` FINAL WHERE _partition = {p} AND _offset < {c}").result_rows[0][0])
            dl_below = sum(1 for o in dl if o < c)
            rep.below_commit_accounted = n_below + dl_below
            if rep.below_commit_accounted < rep.below_commit_kafka and not compacted:
                rep.problems.append(f"{rep.below_commit_kafka - rep.below_commit_accounted} record(s) below the "
                                    f"committed offset {c} are neither stored nor dead-lettered")
        rep.behind = rep.kafka_records - rep.stored - rep.dead_lettered
        if rep.behind < 0 and not compacted:
            rep.problems.append(f"{-rep.behind} more row(s) stored than records in Kafka")
        parts.append(rep)
    ok = not any(r.problems for r in parts)
    return {"topic": topic, "table": t, "compacted": compacted, "ok": ok,
            "kafka_records": sum(r.kafka_records for r in parts),
            "stored": sum(r.stored for r in parts), "stored_raw": sum(r.stored_raw for r in parts),
            "dead_lettered": sum(r.dead_lettered for r in parts),
            "behind": sum(r.behind for r in parts),
            "partitions": [asdict(r) for r in parts]}


def run(topics: list[str] | None = None, group: str | None = None, client=None) -> dict:
    from sinks import views
    from sinks.ddl import contract_topics
    from sinks.sink import GROUP

    import os

    group = group or os.environ.get("TELBUS_SINK_GROUP") or GROUP
    client = client or EndpointClient()
    names = topics or list(contract_topics())
    reports = [audit_topic(t, client, group) for t in names]
    view_res = views.audit(client) if not topics else {}
    ok = all(r["ok"] for r in reports) and all(v["ok"] for v in view_res.values())
    return {"ok": ok, "group": group, "topics": reports, "views": view_res}


def main(args) -> int:
    res = run(getattr(args, "topic", None))
    if getattr(args, "format", "text") == "json":
        print(json.dumps(res, indent=2))
    else:
        print(f"{'topic':28} {'kafka':>9} {'stored':>9} {'raw':>9} {'dlq':>6} {'behind':>8}  status")
        for r in res["topics"]:
            if "table" not in r:
                print(f"{r['topic']:28} {'-':>9} {'-':>9} {'-':>9} {'-':>6} {'-':>8}  {'; '.join(r['problems'])}")
                continue
            status = "ok" if r["ok"] else "MISMATCH"
            if r["compacted"]:
                status += " (compacted)"
            print(f"{r['topic']:28} {r['kafka_records']:>9} {r['stored']:>9} {r['stored_raw']:>9} "
                  f"{r['dead_lettered']:>6} {r['behind']:>8}  {status}")
            for p in r["partitions"]:
                for prob in p["problems"]:
                    print(f"    partition {p['partition']}: {prob}")
        for v, vr in res["views"].items():
            line = f"view {v:24} rows={vr['rows']:<8} " + ("ok" if vr["ok"] else
                                                            f"MISMATCH missing={vr['missing']} extra={vr['extra']}")
            print(line)
        print("sink audit: " + ("ok" if res["ok"] else "MISMATCH"))
    sys.stdout.flush()
    return 0 if res["ok"] else 1
