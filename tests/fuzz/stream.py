"""Helpers of the stream fuzz tests: sending with offsets, good records on chosen partitions,
reading DLQs with headers, waiting until every consumer group has caught up."""
from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from confluent_kafka import KafkaError, TopicPartition

from telbus import codec, jsonform, kafka
from tests.samples import SAMPLES

import topics

INPUTS = tuple(t.name for t in topics.contract_topics("input"))


def partitions(topic: str) -> int:
    return topics.catalog()[topic].partitions


@dataclass
class Sent:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    decodable: bool


class Sender:
    """A plain producer (explicit partitions) remembering where every record landed."""

    def __init__(self, **conf):
        self.producer = kafka.producer(**conf)
        self.sent: list[Sent] = []
        self.errors: list[str] = []

    def send(self, topic: str, value, key=None, partition: int | None = None) -> None:
        try:
            decodable = codec.decode(value) is not None
        except codec.DecodeError:
            decodable = False

        def done(err, msg):
            if err is not None:
                self.errors.append(f"{topic}: {err}")
            else:
                self.sent.append(Sent(topic, msg.partition(), msg.offset(), key, value, decodable))

        kw = {"partition": partition} if partition is not None else {}
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=done, **kw)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self) -> list[Sent]:
        assert self.producer.flush(60) == 0, "records not delivered"
        assert not self.errors, self.errors[:5]
        return self.sent


def key_for_partition(topic: str, partition: int, prefix: str) -> str:
    """A key the Java/aiokafka partitioner (murmur2) puts into ``partition``."""
    from aiokafka.partitioner import murmur2

    n = partitions(topic)
    for i in range(100_000):
        k = f"{prefix}-{i}"
        if (murmur2(k.encode()) & 0x7FFFFFFF) % n == partition:
            return k
    raise AssertionError("no key found")


def good_event(topic: str, key: str, uid: str) -> dict:
    """A valid event for ``topic`` whose record key is ``key``."""
    e = json.loads(json.dumps(SAMPLES[topic][0]))
    e["event_id"] = f"good-{uid}"
    if topic == "net.cdr.raw":
        e.update(cdr_id=f"C-{uid}", subscriber_id=key, called_number="13800138000")
    elif topic == "bss.subscriber.events":
        e.update(subscriber_id=key, broadband_account=f"bb-{uid}", access_ne_id=None)
    elif topic == "bss.order.events":
        e.update(order_id=f"O-{uid}", subscriber_id=key)
    elif topic == "bss.tariff.plans":
        e.update(plan_id=key.split("@")[0], version=1)
    elif topic == "oss.topology":
        e.update(ne_id=key, parent_ne_id=None)
    elif topic == "oss.alarm.raw":
        e.update(alarm_id=f"AL-{uid}", site_id=key, ne_id=f"NE-{uid}")
    elif topic == "sec.login.events":
        e.update(login_id=f"L-{uid}", account=key, result="SUCCESS")
    return jsonform.event_from_json(e)


def send_good_records(sender: Sender, where: dict[str, set[int]]) -> dict[str, list[dict]]:
    """One valid record on every (topic, partition) in ``where``; returns the events by topic."""
    out: dict[str, list[dict]] = defaultdict(list)
    for topic, parts in sorted(where.items()):
        for p in sorted(parts):
            uid = uuid.uuid4().hex[:10]
            if topic == "bss.tariff.plans":
                key = f"P-{uid}@1"
            else:
                key = key_for_partition(topic, p, f"K{uid}")
            ev = good_event(topic, key, uid)
            sender.send(topic, codec.encode(ev), key.encode(), partition=p)
            out[topic].append(ev)
    return out


def read_records(topic: str, timeout: float = 30.0) -> list[tuple[int, int, bytes | None, bytes | None, dict]]:
    """Every record of ``topic`` (read_committed): (partition, offset, key, value, headers)."""
    c = kafka.consumer(None, **{"enable.partition.eof": True, "fetch.message.max.bytes": 4 * 1024 * 1024})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        want = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in want])
        out, done = [], set()
        deadline = time.monotonic() + timeout
        while done != want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
                continue
            hdrs = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (m.headers() or [])}
            out.append((m.partition(), m.offset(), m.key(), m.value(), hdrs))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        return out
    finally:
        c.close()


def dead_letters(topics_: tuple[str, ...] = INPUTS) -> dict[tuple[str, int, int], list[dict]]:
    """DLQ records by (original topic, partition, offset)."""
    from telbus import dlq

    out: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for t in topics_:
        for p, o, key, value, h in read_records(dlq.dlq_topic(t)):
            ref = (h.get(dlq.ORIGINAL_TOPIC), int(h.get(dlq.ORIGINAL_PARTITION, -1)),
                   int(h.get(dlq.ORIGINAL_OFFSET, -1)))
            out[ref].append({"stage": h.get(dlq.STAGE), "error": h.get(dlq.ERROR), "key": key, "value": value,
                             "partition": p, "offset": o})
    return out


def assignments(topics_: tuple[str, ...] = INPUTS) -> dict[str, set[tuple[str, int]]]:
    """Per consumer group, the input partitions its members are assigned."""
    a = kafka.admin()
    groups = [g.group_id for g in a.list_consumer_groups(request_timeout=10).result().valid]
    out: dict[str, set[tuple[str, int]]] = {}
    if not groups:
        return out
    for g, fut in a.describe_consumer_groups(groups, request_timeout=10).items():
        desc = fut.result()
        assigned = {(tp.topic, tp.partition) for m in desc.members for tp in m.assignment.topic_partitions
                    if tp.topic in topics_}
        if assigned:
            out[g] = assigned
    return out


def lagging(topics_: tuple[str, ...] = INPUTS) -> dict[str, list[str]]:
    """Per consumer group, the assigned input partitions whose committed offset is behind the end."""
    a = kafka.admin()
    groups = [g.group_id for g in a.list_consumer_groups(request_timeout=10).result().valid]
    if not groups:
        return {"<none>": ["no consumer group yet"]}
    c = kafka.consumer(None)
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics_:
            for p in range(partitions(t)):
                ends[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
    finally:
        c.close()
    from confluent_kafka import ConsumerGroupTopicPartitions

    out: dict[str, list[str]] = {}
    described = a.describe_consumer_groups(groups, request_timeout=10)
    for g, fut in described.items():
        desc = fut.result()
        assigned = [(tp.topic, tp.partition) for m in desc.members for tp in m.assignment.topic_partitions
                    if tp.topic in topics_]
        if not assigned:
            continue
        req = [ConsumerGroupTopicPartitions(g, [TopicPartition(t, p) for t, p in assigned])]
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in a.list_consumer_group_offsets(req)[g].result().topic_partitions}
        behind = [f"{t}[{p}] {committed.get((t, p))}<{ends[(t, p)]}" for t, p in assigned
                  if ends[(t, p)] > 0 and committed.get((t, p), -1) < ends[(t, p)]]
        if behind:
            out[g] = behind
    return out


def owner(stage: str | None) -> str:
    """The component a DLQ stage names: rating, fraud, alarms, subscriptions, sink, ..."""
    import re

    return re.split(r"[.\-_:/ ]", stage or "?", maxsplit=1)[0]
