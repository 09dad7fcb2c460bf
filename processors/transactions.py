"""The Kafka transaction plumbing every processor loop shares.

Each loop (rating, fraud, alarms, subscription sync) consumes with read_committed and
static membership, and commits each batch's outputs, changelog records and input offsets
in one transaction of its own transactional producer. What differs between them is the
batch; how a batch is committed, and how a loop gets back to the committed state when a
transaction has to be aborted, is the same and lives here.
"""
from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from telbus import kafka

log = logging.getLogger("telbus.transactions")

#: transaction.timeout.ms: how long a crashed worker's open transaction can hold back
#: read_committed readers when no worker with its transactional.id comes back.
TIMEOUT_MS = 10_000


def producer(transactional_id: str) -> Producer:
    """A transactional producer, initialised: ``init_transactions`` fences a predecessor
    with the same id and aborts what it left open."""
    p = kafka.producer(**{"transactional.id": transactional_id, "transaction.timeout.ms": TIMEOUT_MS,
                          "linger.ms": 2})
    p.init_transactions(60)
    return p


def consumer(group: str, instance_id: str) -> Consumer:
    """A read_committed consumer with static membership (a restarted worker gets its
    partitions back at once instead of waiting out its predecessor's session); the *range*
    assignor gives one member the same partition numbers of co-partitioned topics."""
    return kafka.consumer(group, **{
        "partition.assignment.strategy": "range",
        "enable.partition.eof": False,
        "isolation.level": "read_committed",
        "group.instance.id": instance_id,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 300_000,
    })


def positions(done: dict[tuple[str, int], int]) -> list[TopicPartition]:
    """Offsets to commit from ``(topic, partition) -> next offset`` of what was processed."""
    return [TopicPartition(t, p, o) for (t, p), o in sorted(done.items())]


def commit(producer: Producer, consumer: Consumer, offsets: list | None = None) -> None:
    """Offsets into the open transaction, then commit it.

    ``offsets``: what to commit (default: the consumer's positions)."""
    if offsets is None:
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
    producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 60)
    producer.commit_transaction(60)


def aborted(producer: Producer, exc: KafkaException, who: str) -> bool:
    """For a KafkaException raised inside a transaction: if it requires an abort, abort and
    return True (the caller then rewinds (:func:`rewind`) and rebuilds its state from the log);
    otherwise False and the caller re-raises (fenced, fatal: ``processors/hosting.py``)."""
    err = exc.args[0]
    if not err.txn_requires_abort():
        return False
    log.warning("%s: transaction aborted (%s); rewinding to the committed state", who, err)
    producer.abort_transaction(60)
    return True


def commit_or_abort(producer: Producer, consumer: Consumer, offsets: list | None = None, who: str = "") -> bool:
    """:func:`commit`; False (after aborting) when the transaction had to be aborted."""
    try:
        commit(producer, consumer, offsets)
        return True
    except KafkaException as exc:
        if aborted(producer, exc, who):
            return False
        raise


def rewind(consumer: Consumer) -> None:
    """Seek every assigned partition back to its committed offset."""
    for tp in consumer.committed(consumer.assignment(), 30):
        consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))


def close(consumer: Consumer | None, producer: Producer | None) -> None:
    if consumer is not None:
        try:
            consumer.close()
        except Exception:  # closing is best effort; nothing uncommitted is at stake
            pass
    if producer is not None:
        producer.flush(10)
