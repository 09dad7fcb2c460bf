"""R1 and R2: single-process confluent-kafka consume -> produce loops over the CDR stream.

R1 moves bytes only (no decoding): the ceiling any Python processor on this machine can
reach with this broker. R2 adds what rating really costs: Avro decode, the pure rating
function over in-memory state, Avro encode of the outputs.
"""
from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from bench.common import cpu_seconds_self, create_topic
from telbus import kafka

IN_TOPIC = "net.cdr.raw"


def _consumer():
    return kafka.consumer(f"bench-{uuid.uuid4().hex[:8]}", **{
        "enable.partition.eof": False, "fetch.min.bytes": 65536, "fetch.wait.max.ms": 50,
        "queued.min.messages": 200000})


def consume_produce(n: int, out_topic: str, transform=None) -> dict:
    """Consume ``n`` records from the start of net.cdr.raw, produce each result to ``out_topic``."""
    create_topic(out_topic, 12)
    c = _consumer()
    md = c.list_topics(IN_TOPIC, timeout=10)
    c.assign([TopicPartition(IN_TOPIC, p, OFFSET_BEGINNING) for p in md.topics[IN_TOPIC].partitions])
    p = kafka.producer(**{"linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 500000})
    seen = produced = 0
    t0 = cpu0 = None
    produce = p.produce
    try:
        while seen < n:
            msgs = c.consume(2000, 1.0)
            if not msgs:
                continue
            if t0 is None:
                t0, cpu0 = time.monotonic(), cpu_seconds_self()
            for m in msgs:
                if m.error():
                    continue
                seen += 1
                if transform is None:
                    outs = ((m.value(), m.key()),)
                else:
                    outs = transform(m.value(), m.key())
                for value, key in outs:
                    while True:
                        try:
                            produce(out_topic, value, key, partition=m.partition())
                            break
                        except BufferError:
                            p.poll(0.01)
                    produced += 1
                if seen >= n:
                    break
            p.poll(0)
        p.flush(120)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds_self() - cpu0
    finally:
        c.close()
    return {"records": seen, "produced": produced, "seconds": round(elapsed, 2),
            "throughput_per_s": round(seen / elapsed), "cpu_us_per_record": round(cpu / seen * 1e6, 1)}


def rating_transform(reference_events):
    """The real rating path: decode, rules.rate_cdr over in-memory state, encode outputs."""
    from processors.rating import rules
    from telbus import codec

    catalog: dict = {}
    states: dict = {}
    for _topic, _key, ev in reference_events:
        if ev["event_type"] == "TariffPlan":
            rules.catalog_add(catalog, ev)
    for _topic, _key, ev in reference_events:
        if ev["event_type"] in rules.SUBSCRIBER_EVENT_TYPES:
            states[ev["subscriber_id"]], _ = rules.apply_subscriber_event(states.get(ev["subscriber_id"]), ev, catalog)
    decode, encode = codec.decode, codec.encode

    def transform(value, key):
        cdr = decode(value)
        reason = rules.validate_cdr(cdr)
        if reason:
            return ()
        sid = cdr["subscriber_id"]
        state, outs = rules.rate_cdr(states.get(sid), cdr, catalog)
        if state is not None:
            states[sid] = state
        return [(encode(o), key) for o in outs]

    return transform
