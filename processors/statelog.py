"""Keyed state per input partition, event-sourced into a compacted changelog topic.

A transactional loop (rating, subscription sync) keeps one JSON value per key in memory,
grouped by input partition, and writes every key a batch changed to the changelog
*inside the batch's transaction* (partition = the input partition). The memory copy of a
partition is only ever rebuilt from the committed changelog (read_committed): when the
partition is assigned, and after an aborted transaction. So memory never holds an effect
that the log does not, and a worker that lost everything local -- or another machine --
carries on with identical results.

That is the property Faust's tables lack here: their changelog writes are buffered
outside the offsets' commit, and after a rebalance the memory of a table can be ahead of
both (make chaos lost order statuses that way: the survivor deduplicated events it had
never published).
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from telbus import config, kafka, metrics

log = logging.getLogger("telbus.statelog")


def encode(value: dict) -> bytes:
    """Canonical JSON: the same state is the same bytes (replays compare equal)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def partition_count(topic: str) -> int:
    md = kafka.admin().list_topics(topic, timeout=15)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} does not exist (run telbus topics apply)")
    return len(t.partitions)


def reader(owner: str):
    """A group-less-in-effect read_committed consumer (a fresh group id, nothing committed)."""
    return kafka.consumer(f"{owner}-reader-{uuid.uuid4().hex[:8]}", **{
        "enable.partition.eof": True, "isolation.level": "read_committed"})


def ensure_compacted(topic: str, like: str) -> None:
    """Create the compacted topic ``topic`` (as many partitions as ``like``) if missing."""
    from confluent_kafka.admin import NewTopic

    a = kafka.admin()
    if topic in a.list_topics(timeout=15).topics:
        return
    rf = int(config.env("TELBUS_TOPIC_REPLICATION", "1"))
    fut = a.create_topics([NewTopic(topic, num_partitions=partition_count(like), replication_factor=rf,
                                    config={"cleanup.policy": "compact"})])[topic]
    try:
        fut.result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


class ChangelogState:
    """``tables[partition][key] -> dict`` backed by the compacted topic ``topic``."""

    def __init__(self, topic: str, metric_table: str, owner: str):
        self.topic = topic
        self.metric_table = metric_table      # label of telbus_state_entries
        self.owner = owner                    # log prefix and reader group prefix
        self.tables: dict[int, dict[str, dict]] = {}

    def ensure_topic(self, like: str) -> None:
        ensure_compacted(self.topic, like)

    def table(self, partition: int) -> dict[str, dict]:
        return self.tables.setdefault(partition, {})

    def restore(self, partitions: set[int], timeout: float = 300.0) -> None:
        """Rebuild ``partitions`` from the committed changelog (replacing what memory had)."""
        if not partitions:
            return
        c = reader(self.owner)
        try:
            tables: dict[int, dict[str, dict]] = {p: {} for p in partitions}
            want = set()
            for p in partitions:
                lo, hi = kafka.watermarks(c, TopicPartition(self.topic, p))
                if hi > lo:
                    want.add(p)
            if want:
                c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(want)])
                done: set[int] = set()
                deadline = time.monotonic() + timeout
                while len(done) < len(want):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.owner}: restoring {self.topic} {sorted(want)} timed out")
                    for m in c.consume(1000, 0.5):
                        if m.error():
                            if m.error().code() == KafkaError._PARTITION_EOF:
                                done.add(m.partition())
                            continue
                        key = m.key().decode()
                        if m.value() is None:
                            tables[m.partition()].pop(key, None)
                        else:
                            tables[m.partition()][key] = json.loads(m.value())
            self.tables.update(tables)
            self.report()
            log.info("%s: restored %d keys for partitions %s", self.owner,
                     sum(len(t) for t in tables.values()), sorted(partitions))
        finally:
            c.close()

    def drop(self, partitions) -> None:
        for p in partitions:
            self.tables.pop(p, None)

    def reload(self) -> None:
        """After an aborted transaction: back to what the changelog committed."""
        parts = set(self.tables)
        self.tables.clear()
        self.restore(parts)

    def write(self, producer, dirty: dict[tuple[int, str], dict | None]) -> None:
        """Produce the changed keys (None: a tombstone) into the open transaction."""
        for (p, key), value in dirty.items():
            producer.produce(self.topic, None if value is None else encode(value), key, partition=p)

    def report(self) -> None:
        metrics.STATE_ENTRIES.labels(self.metric_table).set(sum(len(t) for t in self.tables.values()))
