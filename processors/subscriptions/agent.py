"""The subscription sync shell (CONTRACT §4 "Subscription sync"), exactly once.

What it does
============
* consumes ``bss.order.events`` and ``bss.subscriber.events`` (both keyed and
  co-partitioned by subscriber_id; the *range* assignor gives one member the same
  partition number of both) and keeps one JSON value per subscriber: order book and
  subscription (:mod:`.sync`, pure);
* publishes ``bss.order.status`` and ``bss.subscription.state`` (key subscriber_id, the
  shared codec) and dead-letters bad input (undecodable, invalid, unknown order or work
  order after the holding period, conflicting results) to ``<input topic>.dlq`` with the
  original bytes -- for an event that was held first, its own bytes from where it was read;
* writes every published SubscriptionState, with the product types the views need, to the
  compacted topic ``<app id>-subscription-views`` (key subscriber_id): the broadcast
  channel of the HTTP views.

State and exactly once
======================
Per-subscriber state lives in memory per input partition and is event-sourced into the
compacted changelog ``<group>-changelog`` (:mod:`processors.statelog`). Each batch is one
Kafka transaction holding its statuses, states, view records, dead letters, changelog
records and consumer offsets. After a kill -9, a rebalance or an aborted transaction the
state is rebuilt from the committed changelog and the input re-read from the committed
offsets, so every order gets its status once.

This used to be a Faust agent over a Faust table (at-least-once). ``make chaos`` showed
it losing order statuses when one of two workers was killed right after the other
joined: the group's offsets moved past order events that had no status, no dead letter
and no changelog record. Reading faust-streaming 0.15.3 showed how a table's memory and
the fetch position can get ahead of what was committed around a rebalance (records
fetched during a seek are delivered, then re-fetched ones dropped as already read; table
writes stay in memory while offsets restart from the last commit). Rather than patch
Faust's consumer, the processor now runs the same transactional loop as rating, fraud
and alarms; Faust keeps the worker process and the HTTP views.

Views
=====
Every worker reads the views topic completely into a
:class:`~processors.subscriptions.views.ViewIndex` (a background confluent-kafka consumer,
no group, read_committed), so any worker answers for any key, whichever worker owns the
subscriber; after a restart the index is rebuilt from that topic before a request is
answered. Changes made by this worker are put into its index when their transaction has
committed; other workers' changes arrive through the topic.
``GET /views/{ehome|vnet|ismp}/{key}`` -> JSON, 404 with ``{"error": ...}`` for an
unknown key, 503 if the index could not catch up.

Settings: ``TELBUS_SUBSCRIPTIONS_GROUP`` (default ``<app id>-subscriptions``, so
``telbus-subscriptions``) names the group; the changelog and the transactional id derive
from it.
Run alone (tests, debugging): ``python -m processors.subscriptions.agent``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import threading
import time
from collections import Counter
from typing import Callable

from confluent_kafka import Consumer, KafkaException, Producer

from processors import aligned, statelog, transactions
from processors.subscriptions import sync, views
from telbus import codec, config, dlq, kafka, metrics

log = logging.getLogger("telbus.subscriptions")

PROCESSOR = "subscriptions"
STAGE = "subscriptions"
ORDER_TOPIC = "bss.order.events"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
STATUS_TOPIC = "bss.order.status"
STATE_TOPIC = "bss.subscription.state"
#: Both inputs in event-time order per partition (processors/aligned.py); at equal event
#: time a subscriber event goes before an order (its SubscriberCreated first).
RANKS = {SUBSCRIBER_TOPIC: 1, ORDER_TOPIC: 2}
INPUTS = tuple(RANKS)


def _app_id() -> str:
    return config.env("TELBUS_WORKER_APP_ID", "telbus")


def group_id() -> str:
    """Named after the worker app (``TELBUS_WORKER_APP_ID``, default ``telbus``) unless set:
    every worker of one deployment joins the same group, separate deployments do not."""
    return config.env("TELBUS_SUBSCRIPTIONS_GROUP", f"{_app_id()}-subscriptions")


def state_topic() -> str:
    return f"{group_id()}-changelog"


def views_topic() -> str:
    return f"{_app_id()}-subscription-views"


def transactional_id() -> str:
    return f"{group_id()}-{config.env('TELBUS_WORKER_ID', '1')}"


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


# --------------------------------------------------------------------------- the loop

def _ref(m) -> dict:
    """Where an input record was read, with its bytes: kept with a held event so that a
    later dead letter carries the original record."""
    return {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
            "key": base64.b64encode(m.key()).decode() if m.key() is not None else None,
            "value": base64.b64encode(m.value() or b"").decode()}


class SubscriptionProcessor:
    """The consume-sync-produce loop. ``run`` blocks until ``stop()`` or a fatal error."""

    def __init__(self, batch_size: int = 500, poll_timeout: float = 0.2, process: str | None = None):
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.process = process or config.env("TELBUS_PROCESS_NAME", "worker")
        self.group = group_id()
        self.views_topic = views_topic()
        self.state = statelog.ChangelogState(state_topic(), "subscriptions", self.group)
        self._stop = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.ready = threading.Event()
        self.inputs = aligned.AlignedInputs(RANKS, float(config.env("TELBUS_SUBSCRIPTIONS_ALIGN_MS", "500")) / 1000)

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        kafka.wait_for_cluster(120)
        self.state.ensure_topic(like=ORDER_TOPIC)
        statelog.ensure_compacted(self.views_topic, like=ORDER_TOPIC)
        self.producer = transactions.producer(transactional_id())
        self.consumer = transactions.consumer(self.group, transactional_id())
        self.consumer.subscribe(list(INPUTS), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.ready.set()
        if on_ready:
            on_ready()
        log.info("subscriptions: consuming as %s (transactional.id %s)", self.group, transactional_id())
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        transactions.close(self.consumer, self.producer)

    def _on_assign(self, consumer, tps) -> None:
        metrics.REBALANCES.labels(self.process).inc()
        parts = {tp.partition for tp in tps if tp.topic in INPUTS}
        self.state.restore(parts - set(self.state.tables))

    def _on_revoke(self, consumer, tps) -> None:
        self.inputs.revoke(tps)
        self.state.drop({tp.partition for tp in tps if tp.topic in INPUTS})

    def _step(self) -> None:
        now = time.monotonic()
        for m in self.consumer.consume(self.batch_size, self.poll_timeout):
            if self._error(m):
                continue
            self.inputs.seen(m)
            try:
                ev = codec.decode(m.value())
            except codec.DecodeError:
                ev = None               # dead-lettered by _handle, in its turn
            self.inputs.add(m, ev, now)
        msgs = self.inputs.release(self.consumer, now)
        if not msgs:
            return
        t0 = time.monotonic()
        counts: Counter = Counter()
        views_out: list[dict] = []
        latencies: list[float] = []
        self.producer.begin_transaction()
        try:
            dirty: dict[tuple[int, str], dict] = {}
            done: dict[tuple[str, int], int] = {}
            for m, ev in msgs:
                self._handle(m, ev, dirty, counts, views_out, latencies)
                key = (m.topic(), m.partition())
                done[key] = max(done.get(key, 0), m.offset() + 1)
            self.state.write(self.producer, dirty)
            # Only what was processed is committed: records still waiting for alignment
            # are fetched again after a crash.
            transactions.commit(self.producer, self.consumer, transactions.positions(done))
        except KafkaException as exc:
            if not transactions.aborted(self.producer, exc, PROCESSOR):
                raise
            self._rewind()
            return
        for v in views_out:           # committed: now this worker's views may show it
            FEED.upsert(v)
        for (kind, name), n in counts.items():
            if kind == "consumed":
                metrics.EVENTS_CONSUMED.labels(self.process, name).inc(n)
            elif kind == "produced":
                metrics.EVENTS_PRODUCED.labels(self.process, name).inc(n)
            else:
                metrics.OUTCOMES.labels(PROCESSOR, name).inc(n)
        for lat in latencies:
            metrics.EVENT_LATENCY_SECONDS.labels(PROCESSOR).observe(lat)
        metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe((time.monotonic() - t0) / len(msgs))
        self.state.report()

    def _error(self, m) -> bool:
        if m.error():
            log.warning("subscriptions: consumer error %s", m.error())
            return True
        return False

    def _rewind(self) -> None:
        """After an aborted transaction: committed offsets and committed state again."""
        self.inputs.clear()
        transactions.rewind(self.consumer)
        self.state.reload()

    def _dead_letter(self, m, reject, counts: Counter) -> None:
        ref = reject.ref if isinstance(reject.ref, dict) else None
        if ref is None or (ref["topic"], ref["partition"], ref["offset"]) == (m.topic(), m.partition(), m.offset()):
            dlq.send(self.producer, m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", STAGE,
                     reject.reason, original_headers=m.headers())
        else:   # an event held earlier: its own original bytes, from where it was read
            key = base64.b64decode(ref["key"]) if ref.get("key") is not None else None
            dlq.send(self.producer, ref["topic"], ref["partition"], ref["offset"], key,
                     base64.b64decode(ref["value"]), STAGE, reject.reason)
        counts[("outcome", "dlq")] += 1

    def _handle(self, m, ev: dict | None, dirty: dict, counts: Counter, views_out: list, latencies: list) -> None:
        counts[("consumed", m.topic())] += 1
        if ev is None:
            try:
                ev = codec.decode(m.value())
            except codec.DecodeError as exc:
                self._dead_letter(m, sync.Reject(None, str(exc), None), counts)
                counts[("outcome", "decode_error")] += 1
                return
        key = m.key().decode("utf-8", "replace") if m.key() else ""
        if not key:
            self._dead_letter(m, sync.Reject(ev, "invalid: record has no key (subscriber_id)", None), counts)
            counts[("outcome", "invalid")] += 1
            return
        table = self.state.table(m.partition())
        st = table.get(key) or sync.new_state(key)
        res = sync.process(st, ev, ref=_ref(m))
        table[key] = st
        dirty[(m.partition(), key)] = st
        for s in res.order_statuses:
            self.producer.produce(STATUS_TOPIC, codec.encode(s), key)
            counts[("produced", STATUS_TOPIC)] += 1
        for s in res.subscription_states:
            self.producer.produce(STATE_TOPIC, codec.encode(s), key)
            counts[("produced", STATE_TOPIC)] += 1
        for v in res.views:
            self.producer.produce(self.views_topic, json.dumps(v, separators=(",", ":")).encode(), key)
            views_out.append(v)
        for r in res.rejects:
            self._dead_letter(m, r, counts)
        for name, n in sorted(res.counters.items()):
            counts[("outcome", name)] += n
        ts_type, ts = m.timestamp()
        if (res.order_statuses or res.subscription_states) and ts > 0:
            latencies.append(max(0.0, time.time() - ts / 1000))


# --------------------------------------------------------------------------- hosting

def _register_faust_service() -> None:
    """Run the loop inside ``telbus worker`` (processors.commands imports this module),
    and serve the views from the worker's web server."""
    from processors.app import app
    from processors.hosting import host_in_worker

    host_in_worker("subscriptions", SubscriptionProcessor, start_early=True)

    @app.task
    async def start_view_feed() -> None:
        FEED.start(views_topic())

    @app.page("/views/{kind}/{key}")
    async def subscription_view(self, request, kind: str, key: str):
        from processors.app import authorized

        if not authorized(request):
            return self.error(401, "missing or wrong bearer token")
        if kind not in views.KINDS:
            return self.error(404, f"unknown view {kind!r} (ehome, vnet, ismp)")
        FEED.start(views_topic())   # the web server may answer before the app's tasks are started
        if not await FEED.wait_ready(20.0):
            return self.error(503, "view index still loading")
        payload = FEED.lookup(kind, key)
        if payload is None:
            what = "msisdn" if kind == "ismp" else "broadband_account"
            return self.error(404, f"unknown {what}", key=key)
        return self.json(payload)


if config.env("TELBUS_SUBSCRIPTIONS_IN_WORKER", "1") == "1":
    _register_faust_service()


def main() -> int:
    from processors.hosting import run_standalone

    return run_standalone("subscriptions", SubscriptionProcessor)


if __name__ == "__main__":
    sys.exit(main())
