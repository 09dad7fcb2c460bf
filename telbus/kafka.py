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


def _layered(defaults: dict, extra: dict) -> dict:
    """Code defaults < TELBUS_KAFKA_* settings < what the call site requires."""
    conf = {"bootstrap.servers": config.bootstrap(), **defaults, **config.kafka_passthrough()}
    conf.update(extra)   # librdkafka names (dotted) and callbacks such as error_cb, as given
    return conf


def producer(**extra) -> Producer:
    """An idempotent, acks=all producer partitioning keys like the Java client.

    ``murmur2_random`` is the Java client's (and aiokafka's) partitioner: a record keyed by a
    subscriber_id lands in the same partition whichever system produced it, which
    co-partitioning across topics depends on. librdkafka's default (CRC32) would not.
    ``message.max.bytes`` is above the broker's limit so the broker (and the topic's
    ``max.message.bytes``, larger on DLQs) decides what is too large, not the client: a
    record just under an input topic's limit can still be dead-lettered with its headers.
    """
    defaults = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",
                "compression.type": "lz4", "max.in.flight.requests.per.connection": 5,
                "message.max.bytes": 4 * 1024 * 1024}
    return Producer(_layered(defaults, extra))


def consumer(group: str | None = None, **extra) -> Consumer:
    """A consumer; without a group it never commits (replay, consume, audit)."""
    defaults = {"enable.auto.commit": False, "auto.offset.reset": "earliest",
                "enable.partition.eof": True, "isolation.level": "read_committed",
                "group.id": "telbus-anon"}
    if group:
        extra = {**extra, "group.id": group}
    return Consumer(_layered(defaults, extra))


class Refused(RuntimeError):
    """The cluster refused this client's credentials or TLS setup: no retry cures that."""


#: librdkafka errors that mean "these credentials / this TLS setup will never work"
_REFUSAL_CODES = ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL")


def refusal(err) -> str | None:
    """The reason, if a client error (error_cb's KafkaError) is a refusal; else None."""
    name = err.name() if hasattr(err, "name") else str(err)
    if any(c in name for c in _REFUSAL_CODES):
        return f"{name}: {err.str() if hasattr(err, 'str') else err}"
    return None


def wait_for_cluster(timeout: float = 60.0) -> None:
    """Block until the cluster answers metadata requests, or raise with the last error.

    Raises :class:`Refused` as soon as the cluster refuses the credentials or the TLS
    handshake fails: a daemon then exits with the reason instead of retrying forever.
    """
    refused: list[str] = []

    def on_error(err) -> None:
        r = refusal(err)
        if r:
            refused.append(r)

    deadline = time.monotonic() + timeout
    last = None
    a = AdminClient(_layered({}, {"error_cb": on_error}))
    while time.monotonic() < deadline:
        try:
            md = a.list_topics(timeout=2)
            if md.brokers and not refused:
                return
        except KafkaException as exc:
            last = exc
        a.poll(0)
        if refused:
            raise Refused(f"Kafka at {config.bootstrap()} refused the connection: {refused[0]}")
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {config.bootstrap()} did not answer within {timeout:.0f}s: {last}")


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: list[str] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)


#: Client errors after which waiting for delivery is pointless: say so at once.
_FATAL_CODES = _REFUSAL_CODES + ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED", "_FATAL")


class Publisher:
    """Encodes events with the shared codec and publishes them under the contract's key."""

    def __init__(self, codec: Codec | None = None, **producer_conf):
        self.codec = codec or default_codec()
        self.fatal: str | None = None
        self.producer = producer(error_cb=self._on_error, **producer_conf)
        self.report = DeliveryReport()

    def _on_error(self, err) -> None:
        if err.fatal() or any(c in err.name() for c in _FATAL_CODES):
            self.fatal = self.fatal or f"{err.name()}: {err.str()}"

    def _delivery(self, topic: str):
        def on_delivery(err, msg):
            if err is not None:
                self.report.failed.append(f"{topic}: {err.str() if hasattr(err, 'str') else err}")
                if any(c in err.name() for c in _FATAL_CODES):
                    self.fatal = self.fatal or f"{err.name()}: {err.str()}"
            else:
                self.report.delivered += 1
                self.report.per_topic[topic] = self.report.per_topic.get(topic, 0) + 1
        return on_delivery

    def send(self, topic: str, event: dict, key: str | None = None, timestamp_ms: int | None = None) -> None:
        from topics import key_of

        value = self.codec.encode(event)
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        while True:
            try:
                self.producer.produce(topic, value, key if key is not None else key_of(topic, event),
                                      on_delivery=self._delivery(topic), **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:   # refused by the client itself (e.g. too large)
                self.report.failed.append(f"{topic}: {exc.args[0].str() if exc.args else exc}")
                break
        try:
            self.producer.poll(0)
        except (KafkaException, SystemError) as exc:
            self.fatal = self.fatal or _fatal_reason(exc)

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        """Wait for delivery; give up early on an error no retry can cure (credentials, ACLs)."""
        deadline = time.monotonic() + timeout
        remaining = len(self.producer)
        while remaining and not self.fatal and time.monotonic() < deadline:
            try:
                remaining = self.producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
            except (KafkaException, SystemError) as exc:
                # librdkafka's fatal errors (e.g. no permission to get a producer id) surface
                # from flush itself, sometimes wrapped in a SystemError by the callbacks' layer
                self.fatal = self.fatal or _fatal_reason(exc)
        if self.fatal:
            self.report.failed.append(f"gave up: {self.fatal}")
        elif remaining:
            self.report.failed.append(f"{remaining} record(s) not delivered within {timeout:.0f}s")
        return self.report


def _fatal_reason(exc: BaseException) -> str:
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, KafkaException) and e.args and hasattr(e.args[0], "name"):
            return f"{e.args[0].name()}: {e.args[0].str()}"
    return f"{type(exc).__name__}: {exc}"


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
