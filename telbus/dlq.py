"""Dead-letter records: the original bytes untouched, the reason in headers (CONTRACT §3).

Both the Faust processors and the plain confluent-kafka consumers (sink) build their DLQ
records here, so every DLQ in the system looks the same to the operator who reads it.
"""
from __future__ import annotations

from telbus import metrics
from topics import DLQ_SUFFIX

ERROR = "telbus.error"
STAGE = "telbus.stage"
ORIGINAL_TOPIC = "telbus.original.topic"
ORIGINAL_PARTITION = "telbus.original.partition"
ORIGINAL_OFFSET = "telbus.original.offset"

MAX_REASON = 1000


def dlq_topic(topic: str) -> str:
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def headers(topic: str, partition: int, offset: int, stage: str, reason: str) -> list[tuple[str, bytes]]:
    return [
        (ERROR, reason[:MAX_REASON].encode()),
        (STAGE, stage.encode()),
        (ORIGINAL_TOPIC, topic.encode()),
        (ORIGINAL_PARTITION, str(partition).encode()),
        (ORIGINAL_OFFSET, str(offset).encode()),
    ]


def count(topic: str, reason: str) -> None:
    metrics.DLQ_RECORDS.labels(topic, metrics.reason_class(reason)).inc()


def send(producer, topic: str, partition: int, offset: int, key, value, stage: str, reason: str,
         original_headers=None) -> None:
    """Publish one dead letter with a confluent-kafka producer (same partition as the input)."""
    hdrs = list(original_headers or []) + headers(topic, partition, offset, stage, reason)
    producer.produce(dlq_topic(topic), value, key, partition=partition, headers=hdrs)
    count(topic, reason)
