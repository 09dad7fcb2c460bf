"""The rating processor's shell: Kafka in, :mod:`processors.rating.rules` in the middle,
Kafka out, exactly once.

What it does
============
* consumes ``net.cdr.raw`` and ``bss.subscriber.events`` (co-partitioned by subscriber_id:
  the *range* assignor gives one member the same partition number of both) and
  ``bss.tariff.plans`` (1 partition: its owner dead-letters invalid plans);
* every worker also reads the whole of ``bss.tariff.plans`` with a group-less reader, so the
  plan catalog (every version of every plan) is visible to every partition's worker;
* rates with :func:`rules.rate_cdr` / :func:`rules.apply_subscriber_event` and publishes
  RatedCdr to ``bss.cdr.rated`` and CreditControl to ``ocs.credit.control`` (key
  subscriber_id, the shared codec);
* bad records (undecodable bytes, unexpected event type, impossible values, a TariffPlan
  failing validation) go to ``<topic>.dlq`` with ``telbus.error`` and are counted.

State
=====
Per-subscriber state (plan and status history, allowance usage per billing period,
balance, credit-control flag, duplicate window) is event-sourced into the compacted
changelog topic ``telbus-rating-subscribers-changelog`` (key subscriber_id, value the
state as JSON, partition = the input partition). The in-memory copy of a partition's
table is rebuilt from that changelog (read_committed) whenever the partition is
assigned, so a worker that lost everything local -- or a different machine -- carries
on with identical results. There is no local store that could disagree with the log.

Exactly once
============
Each batch is one Kafka transaction holding the batch's RatedCdr / CreditControl / DLQ
records, the changelog records of the subscribers it changed, and the consumer offsets
(``send_offsets_to_transaction`` with the group metadata, KIP-447 fencing). Either all of
it is visible to read_committed readers or none of it: after a kill -9 the open
transaction is aborted (by the restarted worker's ``init_transactions`` with the same
``transactional.id``, or by the transaction timeout), the state is rebuilt from the
committed changelog and the input is re-read from the committed offsets, so every CDR is
rated once and balances equal a straight run's.

Why not Faust's ``processing_guarantee="exactly_once"`` (faust-streaming 0.15.3, read in
the installed sources):
* table changelog writes are ``send_soon`` into the app's ProducerBuffer; under
  exactly-once ``Consumer._commit_offsets`` commits the transaction *without* flushing
  that buffer (only the at-least-once branch calls ``producer.flush()``), so a kill -9
  can commit the offsets and outputs of a batch while its state changes land in the next,
  aborted transaction: the balance forgets a charge and the duplicate window forgets the
  cdr_id -- the double-charge this product cannot have;
* ``TransactionManager.send`` picks the transactional producer from the *destination*
  topic's partition and ``assignor.group_for_topic(topic)``, which raises KeyError for a
  topic the app does not consume (``ocs.credit.control``) and, when it does not raise,
  puts outputs into another partition's transaction than the offsets they belong to;
* the project's producers partition with librdkafka's default (CRC32) while aiokafka
  uses murmur2, so Faust's table partitions would not line up with the input partitions.
So the loop below owns its transactions with confluent-kafka (librdkafka's transactional
producer, the same client as every other telbus producer), and runs inside ``telbus
worker`` as a Faust service (a thread, because librdkafka calls block). Faust keeps
what it is good at here: the worker process, its lifecycle and crash handling.

Run alone (tests, debugging): ``python -m processors.rating.agent``.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processors import aligned, statelog, transactions
from processors.rating import rules
from telbus import codec, config, dlq, kafka, metrics

log = logging.getLogger("telbus.rating")

PROCESSOR = "rating"
CDR_TOPIC = "net.cdr.raw"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
PLANS_TOPIC = "bss.tariff.plans"
RATED_TOPIC = "bss.cdr.rated"
CREDIT_TOPIC = "ocs.credit.control"
STATE_TOPIC = "telbus-rating-subscribers-changelog"
GROUP = "telbus-rating"

# Event-time alignment (processors/aligned.py): per partition number, subscriber events and
# CDRs are the two sides; at equal event time subscriber events go first (audit order).
RANKS = {SUBSCRIBER_TOPIC: 1, CDR_TOPIC: 2}


def group_id() -> str:
    return config.env("TELBUS_RATING_GROUP", GROUP)


def state_topic() -> str:
    return config.env("TELBUS_RATING_STATE_TOPIC", STATE_TOPIC)


def transactional_id() -> str:
    worker = config.env("TELBUS_WORKER_ID", "1")
    return f"{group_id()}-{worker}"


class RatingProcessor:
    """The consume-rate-produce loop. ``run`` blocks until ``stop()`` or a fatal error."""

    def __init__(self, batch_size: int = 500, poll_timeout: float = 0.2, process: str | None = None):
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.process = process or config.env("TELBUS_PROCESS_NAME", "worker")
        self.group = group_id()
        self.state_topic = state_topic()
        self.catalog: dict[str, list[dict]] = {}
        # input partition -> subscriber_id -> state
        self.state = statelog.ChangelogState(self.state_topic, "rating_subscribers", GROUP)
        self._stop = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.plan_reader: Consumer | None = None
        self.ready = threading.Event()
        # Co-partitioned inputs are processed in event-time order (see aligned.py).
        self.inputs = aligned.AlignedInputs(RANKS, float(config.env("TELBUS_RATING_ALIGN_MS", "500")) / 1000)

    # -- lifecycle ------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        kafka.wait_for_cluster(120)
        self.state.ensure_topic(like=CDR_TOPIC)
        self._open_plan_reader()
        self._poll_plans(until_eof=True)
        self.producer = transactions.producer(transactional_id())
        self.consumer = transactions.consumer(self.group, transactional_id())
        self.consumer.subscribe([CDR_TOPIC, SUBSCRIBER_TOPIC, PLANS_TOPIC],
                                on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.ready.set()
        if on_ready:
            on_ready()
        log.info("rating: consuming as %s (transactional.id %s)", self.group, transactional_id())
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        transactions.close(self.plan_reader, None)
        transactions.close(self.consumer, self.producer)

    # -- plans, state -----------------------------------------------------------------
    def _open_plan_reader(self) -> None:
        self.plan_reader = statelog.reader(GROUP)
        n = statelog.partition_count(PLANS_TOPIC)
        self.plan_reader.assign([TopicPartition(PLANS_TOPIC, p, OFFSET_BEGINNING) for p in range(n)])
        self._plan_parts = n

    def _poll_plans(self, until_eof: bool = False, timeout: float = 120.0) -> None:
        """Apply new TariffPlans to the catalog (invalid ones are skipped here: the member
        owning the plans partition dead-letters them)."""
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.plan_reader.consume(500, 0.5 if until_eof else 0)
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    continue
                self._load_plan(m.value())
            if not until_eof:
                if not msgs:
                    return
                continue
            if len(eof) >= self._plan_parts:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("rating: could not read bss.tariff.plans to its end")

    def _load_plan(self, value: bytes) -> str | None:
        try:
            plan = codec.decode(value)
        except codec.DecodeError as exc:
            return str(exc)
        if plan.get("event_type") != "TariffPlan":
            return f"unexpected event_type {plan.get('event_type')!r} on {PLANS_TOPIC} (expected TariffPlan)"
        reason = rules.catalog_add(self.catalog, plan)
        return None if reason is None else f"TariffPlan {plan.get('plan_id')}@{plan.get('version')} rejected: {reason}"

    def _on_assign(self, consumer, tps) -> None:
        metrics.REBALANCES.labels(self.process).inc()
        parts = {tp.partition for tp in tps if tp.topic in (CDR_TOPIC, SUBSCRIBER_TOPIC)}
        self.state.restore(parts - set(self.state.tables))

    def _on_revoke(self, consumer, tps) -> None:
        self.inputs.revoke(tps)
        self.state.drop({tp.partition for tp in tps if tp.topic in RANKS})

    # -- the loop -----------------------------------------------------------------------
    def _step(self) -> None:
        msgs = self.consumer.consume(self.batch_size, self.poll_timeout)
        self._poll_plans()
        now = time.monotonic()
        immediate = []   # plans: nothing to align, handled in arrival order
        for m in msgs:
            if m.error():
                log.warning("rating: consumer error %s", m.error())
                continue
            self.inputs.seen(m)
            if m.topic() == PLANS_TOPIC:
                immediate.append((m, None))
                continue
            try:
                ev = codec.decode(m.value())
            except codec.DecodeError:
                ev = None                     # _handle dead-letters it with the reason, in its turn
            self.inputs.add(m, ev, now)
        good = immediate + self.inputs.release(self.consumer, now)
        if not good:
            return
        counts: Counter = Counter()
        t0 = time.monotonic()
        self.producer.begin_transaction()
        try:
            dirty: dict[tuple[int, str], dict] = {}
            done: dict[tuple[str, int], int] = {}
            for m, ev in good:
                self._handle(m, dirty, counts, ev)
                key = (m.topic(), m.partition())
                done[key] = max(done.get(key, 0), m.offset() + 1)
            self.state.write(self.producer, dirty)
            # Only what was processed is committed: records still waiting in the merger
            # are fetched again after a crash.
            transactions.commit(self.producer, self.consumer, transactions.positions(done))
        except KafkaException as exc:
            if not transactions.aborted(self.producer, exc, PROCESSOR):
                raise
            self._rewind()
            return
        for (outcome, topic), n in counts.items():
            if outcome == "consumed":
                metrics.EVENTS_CONSUMED.labels(self.process, topic).inc(n)
            elif outcome == "produced":
                metrics.EVENTS_PRODUCED.labels(self.process, topic).inc(n)
            else:
                metrics.OUTCOMES.labels(PROCESSOR, outcome).inc(n)
        metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe((time.monotonic() - t0) / len(good))
        self.state.report()

    def _rewind(self) -> None:
        """After an aborted transaction: committed offsets and committed state again."""
        self.inputs.clear()
        transactions.rewind(self.consumer)
        self.state.reload()

    def _dead_letter(self, m, stage: str, reason: str, counts: Counter) -> None:
        dlq.send(self.producer, m.topic(), m.partition(), m.offset(), m.key(), m.value(), stage, reason,
                 original_headers=m.headers())
        counts[("dlq", None)] += 1

    def _emit(self, out: dict, counts: Counter) -> None:
        topic = RATED_TOPIC if out["event_type"] == "RatedCdr" else CREDIT_TOPIC
        self.producer.produce(topic, codec.encode(out), out["subscriber_id"])
        counts[("produced", topic)] += 1
        counts[(out["status"].lower() if topic == RATED_TOPIC else out["action"].lower(), None)] += 1

    def _handle(self, m, dirty: dict, counts: Counter, ev: dict | None = None) -> None:
        topic, p = m.topic(), m.partition()
        counts[("consumed", topic)] += 1
        if ev is None:
            try:
                ev = codec.decode(m.value())
            except codec.DecodeError as exc:
                self._dead_letter(m, "rating.decode", str(exc), counts)
                return
        et = ev.get("event_type")
        if topic == PLANS_TOPIC:
            reason = self._load_plan(m.value())
            if reason is not None:
                self._dead_letter(m, "rating.validate", reason, counts)
            else:
                counts[("plan_loaded", None)] += 1
            return
        if topic == CDR_TOPIC:
            if et != "Cdr":
                self._dead_letter(m, "rating.validate", f"unexpected event_type {et!r} on {topic} (expected Cdr)", counts)
                return
            reason = rules.validate_cdr(ev)
            if reason is not None:
                self._dead_letter(m, "rating.validate", f"invalid CDR {ev.get('cdr_id')!r}: {reason}", counts)
                return
            table = self.state.table(p)
            before = table.get(ev["subscriber_id"])
            after, outs = rules.rate_cdr(before, ev, self.catalog)
        else:
            reason = rules.validate_subscriber_event(ev)
            if reason is not None:
                self._dead_letter(m, "rating.validate", f"invalid {et}: {reason}", counts)
                return
            table = self.state.table(p)
            before = table.get(ev["subscriber_id"])
            after, outs = rules.apply_subscriber_event(before, ev, self.catalog)
        if after is not None and after is not before:
            table[ev["subscriber_id"]] = after
            dirty[(p, ev["subscriber_id"])] = after
        for out in outs:
            self._emit(out, counts)


# -- hosting ------------------------------------------------------------------------------

def _register_faust_service() -> None:
    """Run the loop inside ``telbus worker`` (processors.commands imports this module).

    Started with the app rather than after Faust's group assignment and table recovery:
    rating has its own group (static membership) and its own state, so after a kill -9 it
    resumes at once instead of waiting for the dead member's Faust session to expire."""
    from processors.hosting import host_in_worker

    host_in_worker("rating", RatingProcessor, start_early=True)


if config.env("TELBUS_RATING_IN_WORKER", "1") == "1":
    _register_faust_service()


def main() -> int:
    from processors.hosting import run_standalone

    return run_standalone("rating", RatingProcessor)


if __name__ == "__main__":
    sys.exit(main())
