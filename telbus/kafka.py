"""confluent-kafka clients configured one way for every process.

Producers are idempotent with ``acks=all``: a retried send never duplicates a record and
a delivered record is on every in-sync replica. Every ``TELBUS_KAFKA_*`` setting passes
through, so SASL/TLS deployments need no code change.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from telbus import config
from telbus.codec import Codec, default_codec


def client_config(**extra) -> dict:
    conf = {"bootstrap.servers": config.bootstrap(), **config.kafka_passthrough()}
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def admin() -> AdminClient:
    return AdminClient(client_config())


def producer(**extra) -> Producer:
    """An idempotent, acks=all producer partitioning keys like the Java client.

    ``murmur2_random`` is the Java client's (and aiokafka's) partitioner: a record keyed by a
    subscriber_id lands in the same partition whichever system produced it, which
    co-partitioning across topics depends on. librdkafka's default (CRC32) would not.
    """
    conf = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",
            "compression.type": "lz4", "max.in.flight.requests.per.connection": 5}
    conf.update(extra)
    return Producer(client_config(**conf))


def consumer(group: str | None = None, **extra) -> Consumer:
    """A consumer; without a group it never commits (replay, consume, audit)."""
    conf = {"enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": True, "isolation.level": "read_committed"}
    conf["group.id"] = group or "telbus-anon"
    conf.update(extra)
    return Consumer(client_config(**conf))


def wait_for_cluster(timeout: float = 60.0) -> None:
    """Block until the cluster answers metadata requests, or raise with the last error."""
    deadline = time.monotonic() + timeout
    last = None
    a = admin()
    while time.monotonic() < deadline:
        try:
            md = a.list_topics(timeout=5)
            if md.brokers:
                return
        except KafkaException as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {config.bootstrap()} did not answer within {timeout:.0f}s: {last}")


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: list[str] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)


class Publisher:
    """Encodes events with the shared codec and publishes them under the contract's key."""

    def __init__(self, codec: Codec | None = None, **producer_conf):
        self.codec = codec or default_codec()
        self.producer = producer(**producer_conf)
        self.report = DeliveryReport()

    def _on_delivery(self, err, msg):
        if err is not None:
            self.report.failed.append(f"{msg.topic()}: {err}")
        else:
            self.report.delivered += 1
            self.report.per_topic[msg.topic()] = self.report.per_topic.get(msg.topic(), 0) + 1

    def send(self, topic: str, event: dict, key: str | None = None, timestamp_ms: int | None = None) -> None:
        from topics import key_of

        value = self.codec.encode(event)
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        while True:
            try:
                self.producer.produce(topic, value, key if key is not None else key_of(topic, event),
                                      on_delivery=self._on_delivery, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        remaining = self.producer.flush(timeout)
        if remaining:
            self.report.failed.append(f"{remaining} record(s) not delivered within {timeout:.0f}s")
        return self.report


def publish_schemas(codec: Codec | None = None) -> int:
    """Publish every known schema version to the compacted ``_telbus.schemas`` topic."""
    from topics import SCHEMAS_TOPIC

    codec = codec or default_codec()
    p = producer()
    versions = codec.catalog.all_versions()
    for sv in versions:
        p.produce(SCHEMAS_TOPIC, sv.json.encode(), sv.fingerprint_hex)
    if p.flush(30):
        raise RuntimeError("schemas not delivered to _telbus.schemas")
    return len(versions)


_RETRIABLE_METADATA = ("NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PART",
                       "_TRANSPORT", "_TIMED_OUT", "NOT_LEADER_OR_FOLLOWER")


def watermarks(client: Consumer, tp, timeout: float = 30.0) -> tuple[int, int]:
    """``get_watermark_offsets`` that waits out a partition without a leader yet.

    A topic created a moment ago (a processor's state topic on first start, or after a
    broker restart) answers NOT_LEADER for a while; that is a reason to wait, not to crash.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_watermark_offsets(tp, timeout=min(10.0, max(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            name = exc.args[0].name() if exc.args and hasattr(exc.args[0], "name") else str(exc)
            if not any(r in name for r in _RETRIABLE_METADATA) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
