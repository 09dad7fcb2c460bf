"""Faust shell of subscription sync (CONTRACT §4 "Subscription sync").

* One agent consumes ``bss.order.events`` and ``bss.subscriber.events`` (both keyed and
  co-partitioned by subscriber_id) and keeps one JSON value per subscriber in the table
  ``subscription-sync`` (order book + subscription, see :mod:`.sync`).  It publishes
  ``bss.order.status`` and ``bss.subscription.state`` with the shared codec, and
  dead-letters bad input (undecodable, invalid, unknown order/work order after the
  holding period, conflicting results) to ``<input topic>.dlq`` with the original bytes.
* Every published SubscriptionState is also written, with the product types the views
  need, to the compacted internal topic ``<app id>-subscription-views`` (key
  subscriber_id).  It is the broadcast channel of the HTTP views: every worker reads it
  completely into a
  :class:`~processors.subscriptions.views.ViewIndex` (a background confluent-kafka
  consumer, no group, read_committed), so any worker answers for any key, whichever
  worker owns the subscriber; after a restart the index is rebuilt from that topic before
  a request is answered.  Changes made by this worker are put into its index at once;
  other workers' changes arrive when their transaction commits (the app's commit
  interval).
* HTTP (Faust web server of the worker): ``GET /views/{ehome|vnet|ismp}/{key}`` -> JSON,
  404 with ``{"error": ...}`` for an unknown key, 503 if the index could not catch up.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time

import faust

from processors import dlq
from processors.app import PARTITIONS, app, output_topic
from processors.subscriptions import sync, views
from telbus import codec, config, kafka, metrics
from telbus import dlq as dlq_records

log = logging.getLogger(__name__)

PROCESSOR = "subscriptions"
STAGE = "subscriptions"
ORDER_TOPIC = "bss.order.events"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
STATUS_TOPIC = "bss.order.status"
STATE_TOPIC = "bss.subscription.state"

inputs = app.topic(ORDER_TOPIC, SUBSCRIBER_TOPIC, key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw", internal=False)
status_out = output_topic(STATUS_TOPIC)
state_out = output_topic(STATE_TOPIC)

_json_by_subscriber = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
sync_table = app.Table("subscription-sync", partitions=PARTITIONS, schema=_json_by_subscriber,
                       help="subscription sync state per subscriber")
#: View records (SubscriptionState + product types), compacted, key subscriber_id: the
#: broadcast channel every worker's view index reads in full.  A plain topic written by the
#: agent (not a table changelog): the consumer does not subscribe to it, so sending to it
#: needs no partition-group lookup (Faust's exactly-once producer fails that lookup for a
#: changelog when several workers share the group).
views_topic = app.topic(f"{app.conf.id}-subscription-views", partitions=PARTITIONS, internal=True,
                        compacting=True, key_type=str, key_serializer="raw", value_serializer="json")

_dlq_topics: dict = {}


def _process_name() -> str:
    return config.env("TELBUS_PROCESS_NAME", "worker")


# --------------------------------------------------------------------------- view index

class ViewFeed:
    """A ViewIndex kept up to date from the compacted ``<app id>-subscription-views`` topic."""

    def __init__(self):
        self.index = views.ViewIndex()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def upsert(self, rec: dict) -> None:
        with self.lock:
            self.index.upsert(rec)

    def lookup(self, kind: str, key: str):
        with self.lock:
            return self.index.lookup(kind, key)

    def start(self, topic: str) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, args=(topic,), name="subscription-views-feed",
                                           daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self, topic: str) -> None:
        while not self.stopping.is_set():
            try:
                self._consume(topic)
            except Exception:  # broker hiccup: rebuild the consumer; upserts are idempotent
                log.exception("subscription views feed failed; retrying")
                time.sleep(1.0)

    def _consume(self, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        c = kafka.consumer(None, **{"enable.partition.eof": False})
        try:
            parts = []
            while not self.stopping.is_set():
                # all topics: a metadata request naming a missing topic would auto-create it
                # (with the broker's default partition count) before Faust creates it right
                md = c.list_topics(timeout=10)
                t = md.topics.get(topic)
                if t is not None and t.error is None and t.partitions:
                    parts = sorted(t.partitions)
                    break
                time.sleep(0.5)
            if not parts:
                return
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            targets = {p: kafka.watermarks(c, TopicPartition(topic, p))[1] for p in parts}
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                msg = c.poll(0.2)
                if msg is None:
                    if not self.ready.is_set():
                        pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
                        caught_up = all(targets[p] == 0 or pos.get(p, -1) >= targets[p] for p in parts)
                        if caught_up or time.monotonic() - idle_since > 2.0:
                            self.ready.set()
                    continue
                if msg.error():
                    continue
                idle_since = time.monotonic()
                if msg.value() is None:
                    continue
                try:
                    rec = json.loads(msg.value())
                    self.upsert(rec)
                except (ValueError, KeyError, TypeError):
                    log.warning("bad view record at %s[%d]@%d", topic, msg.partition(), msg.offset())
        finally:
            c.close()

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready.is_set()


FEED = ViewFeed()


def _start_feed() -> None:
    FEED.start(views_topic.get_topic_name())


@app.task
async def start_view_feed() -> None:
    await views_topic.maybe_declare()
    _start_feed()


@app.page("/views/{kind}/{key}")
async def subscription_view(self, request, kind: str, key: str):
    from processors.app import authorized

    if not authorized(request):
        return self.error(401, "missing or wrong bearer token")
    if kind not in views.KINDS:
        return self.error(404, f"unknown view {kind!r} (ehome, vnet, ismp)")
    _start_feed()  # the web server may answer before the app's tasks are started
    if not await FEED.wait_ready(20.0):
        return self.error(503, "view index still loading")
    payload = FEED.lookup(kind, key)
    if payload is None:
        what = "msisdn" if kind == "ismp" else "broadband_account"
        return self.error(404, f"unknown {what}", key=key)
    return self.json(payload)


# --------------------------------------------------------------------------- agent

def _ref(msg) -> dict:
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
            "key": base64.b64encode(msg.key).decode() if msg.key is not None else None,
            "value": base64.b64encode(msg.value or b"").decode()}


def _dlq_topic(name: str):
    if name not in _dlq_topics:
        _dlq_topics[name] = app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)
    return _dlq_topics[name]


async def _dead_letter(event, reject) -> None:
    msg = event.message
    ref = reject.ref if isinstance(reject.ref, dict) else None
    if ref is None or (ref["topic"], ref["partition"], ref["offset"]) == (msg.topic, msg.partition, msg.offset):
        await dlq.send(event, STAGE, reject.reason)
        return
    # an event held earlier: its own original bytes, from where it was read
    hdrs = dlq_records.headers(ref["topic"], ref["partition"], ref["offset"], STAGE, reject.reason)
    key = base64.b64decode(ref["key"]) if ref.get("key") is not None else None
    await _dlq_topic(dlq_records.dlq_topic(ref["topic"])).send(
        key=key, value=base64.b64decode(ref["value"]), partition=ref["partition"], headers=hdrs)
    dlq_records.count(ref["topic"], reject.reason)


@app.agent(inputs, name="subscription-sync")
async def subscription_sync(stream):
    """Faust would leave a crashed agent dead while the worker runs on and commits past
    its input: a crash stops the whole worker instead (processors/failfast.py)."""
    try:
        await _sync(stream)
    except Exception as exc:
        from processors import failfast

        failfast.fail("subscription-sync", exc)
        raise


async def _sync(stream) -> None:
    process = _process_name()
    async for event in stream.events():
        msg = event.message
        started = time.perf_counter()
        metrics.EVENTS_CONSUMED.labels(process, msg.topic).inc()
        try:
            ev = codec.decode(msg.value)
        except codec.DecodeError as exc:
            await dlq.send(event, STAGE, str(exc))
            metrics.OUTCOMES.labels(PROCESSOR, "decode_error").inc()
            continue
        key = msg.key.decode("utf-8", "replace") if msg.key else ""
        if not key:
            await dlq.send(event, STAGE, "invalid: record has no key (subscriber_id)")
            metrics.OUTCOMES.labels(PROCESSOR, "invalid").inc()
            continue
        st = sync_table.get(key) or sync.new_state(key)
        res = sync.process(st, ev, ref=_ref(msg))
        sync_table[key] = st
        for s in res.order_statuses:
            await status_out.send(key=key, value=s)
            metrics.EVENTS_PRODUCED.labels(process, STATUS_TOPIC).inc()
        for s in res.subscription_states:
            await state_out.send(key=key, value=s)
            metrics.EVENTS_PRODUCED.labels(process, STATE_TOPIC).inc()
        for v in res.views:
            await views_topic.send(key=key, value=v)
            FEED.upsert(v)
        for r in res.rejects:
            await _dead_letter(event, r)
        for name, n in sorted(res.counters.items()):
            metrics.OUTCOMES.labels(PROCESSOR, name).inc(n)
        metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe(time.perf_counter() - started)
        if (res.order_statuses or res.subscription_states) and msg.timestamp:
            metrics.EVENT_LATENCY_SECONDS.labels(PROCESSOR).observe(max(0.0, time.time() - msg.timestamp))
