"""The fraud detection shell (CONTRACT §4 "Fraud detection") -> sec.fraud.alerts, exactly once.

Layout
======
One consumer group (``TELBUS_FRAUD_GROUP``, default ``telbus-fraud``), one loop::

    sec.login.events (6, key account) ---> LOGIN_BRUTE_FORCE, IMPOSSIBLE_TRAVEL  [account]
        | failed logins, original bytes, key source_ip,
        | header telbus.fraud.origin = source partition
        v
    <group>-logins-by-ip (6, internal) --> CREDENTIAL_STUFFING                  [source-ip]
    net.cdr.raw (12, key subscriber_id) -> IRSF, SIMBOX                          [cdr]
    bss.subscriber.events + bss.cdr.rated (12, co-partitioned by subscriber_id)
                                       -> NEW_SUBSCRIBER_SPEND                  [spend]
    every alert -> sec.fraud.alerts, key = the alert's subject

The rule logic is ``processors.fraud.rules`` (pure, event time only). Here records are
decoded, the state of the record's key is handed to the rules, and outputs, state
changes and offsets are committed together. The consumer uses the *range* assignor, so
one member gets the same partition numbers of topics with the same partition count.

State
=====
``states[table][partition][key] = {"p": partition, "s": {rule: rule state}}``, plain dicts
in memory. Every key a batch changes is written to the compacted changelog
``<group>-state`` (key ``["<table>", "<key>"]`` as JSON, value JSON, tombstone when the
key's rule states are all idle), in the partition of the input record. When partitions
are assigned their tables are rebuilt from that changelog (read_committed), so a new
machine or a worker that lost its disk carries on exactly. Keys that go quiet are
expired by an event-time sweep: when a (table, partition)'s watermark (max event time
processed) has advanced by ``SWEEP_EVERY_MS`` since its last sweep, every key of it is
pruned against ``watermark - allowed lateness`` and deleted when idle. No wall clock.

Exactly once
============
Each batch is one Kafka transaction holding the alerts, the repartitioned logins, DLQ
records, the changelog records and the consumer offsets (``send_offsets_to_transaction``
with the group metadata). After a kill -9 the open transaction is aborted, the state is
rebuilt from the committed changelog and the input re-read from the committed offsets:
no alert is missed or published twice. The rules also ignore an event id already in
their window (producer retries). Faust's own ``exactly_once`` is not used for the reasons
given in ``processors/rating/agent.py`` (sends to a topic the app does not consume, such
as sec.fraud.alerts, leave the transaction; changelog writes can miss their commit): an
integration test showed an alert published twice after a restart.

Bad input
=========
sec.login.events is read only by this processor: an undecodable or invalid login goes to
``sec.login.events.dlq`` (original bytes, ``telbus.error`` etc. headers). net.cdr.raw,
bss.subscriber.events and bss.cdr.rated are owned by the rating / subscription
processors, which dead-letter their bad records; here such a record is only counted
(``skipped_invalid``) so it does not appear in a DLQ twice.

Metrics (``telbus.metrics``)
=======
``telbus_processor_outcomes_total{processor="fraud", outcome}`` with outcomes
``alert_<RULE>``, ``suppressed_<RULE>``, ``late_<RULE>``, ``duplicate``, ``dlq``,
``skipped_invalid``, ``expired_keys``; ``telbus_late_events_total{processor="fraud"}``;
``telbus_events_consumed_total`` / ``telbus_events_produced_total{topic}``;
``telbus_state_entries{table="fraud_<table>"}``; ``telbus_processing_seconds{processor=
"fraud"}``.

Settings: ``TELBUS_FRAUD_*`` thresholds (``processors.fraud.config``, validated when this
module is imported, so a bad value stops the worker at start with the variable's name),
``TELBUS_FRAUD_GROUP``, ``TELBUS_FRAUD_ALERT_TOPIC`` (tests only: an isolated output topic),
``TELBUS_FRAUD_IN_WORKER`` (default 1: run inside ``telbus
worker``). Run alone: ``python -m processors.fraud.agent``.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processors import transactions
from processors.fraud import rules
from processors.fraud.config import FraudConfig
from telbus import codec, config, dlq, kafka, metrics
from topics import catalog

log = logging.getLogger("telbus.fraud")

PROCESSOR = "fraud"
LOGIN_TOPIC = "sec.login.events"
CDR_TOPIC = "net.cdr.raw"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
RATED_TOPIC = "bss.cdr.rated"
ALERT_TOPIC = "sec.fraud.alerts"
GROUP = "telbus-fraud"
SWEEP_EVERY_MS = 10 * 60 * 1000
#: Header on the repartitioned logins: the sec.login.events partition they came from.
ORIGIN_HEADER = "telbus.fraud.origin"
BY_IP_RETENTION_MS = 7 * 24 * 3600 * 1000

#: Input topics whose bad records this processor dead-letters (it is their only reader).
OWNED_TOPICS = {LOGIN_TOPIC}

CONFIG = FraudConfig.from_env()

ACCOUNT_RULES = (rules.LOGIN_BRUTE_FORCE, rules.IMPOSSIBLE_TRAVEL)
IP_RULES = (rules.CREDENTIAL_STUFFING,)
CDR_RULES = (rules.IRSF, rules.SIMBOX)
SPEND_RULES = (rules.NEW_SUBSCRIBER_SPEND,)


def group_id() -> str:
    return config.env("TELBUS_FRAUD_GROUP", GROUP)


def alert_topic() -> str:
    """sec.fraud.alerts; ``TELBUS_FRAUD_ALERT_TOPIC`` redirects it (isolated tests only)."""
    return config.env("TELBUS_FRAUD_ALERT_TOPIC", ALERT_TOPIC)


def by_ip_topic() -> str:
    return f"{group_id()}-logins-by-ip"


def state_topic() -> str:
    return f"{group_id()}-state"


def transactional_id() -> str:
    return f"{group_id()}-{config.env('TELBUS_WORKER_ID', '1')}"


# ---------------------------------------------------------------------- state handling
# (pure: unit-tested without a broker)


def apply_rules(record: dict | None, rule_names, event: dict, partition: int,
                cfg: FraudConfig = CONFIG, origin: str | None = None):
    """Run ``rule_names`` over one event against a key's record.

    Returns ``(new_record_or_None, changed, alerts, signals)``; ``signals`` are outcome
    names for the metrics. Raises ``rules.InvalidEvent`` before changing anything.
    """
    states = dict(record["s"]) if record else {}
    alerts: list[dict] = []
    signals: list[str] = []
    changed = False
    for rule in rule_names:
        old = states.get(rule)
        if rule == rules.CREDENTIAL_STUFFING:
            res = rules.credential_stuffing(old, event, cfg, origin=origin)
        else:
            res = rules.DETECTORS[rule](old, event, cfg)
        alerts += res.alerts
        signals += [f"alert_{rule}"] * len(res.alerts)
        signals += [f"suppressed_{rule}"] * res.suppressed
        if res.late:
            signals.append(f"late_{rule}")
        if res.duplicate:
            signals.append("duplicate")
        if res.state is old or (old is None and rules.is_idle(res.state)):
            continue
        changed = True
        if rules.is_idle(res.state):
            states.pop(rule, None)
        else:
            states[rule] = res.state
    if not changed:
        return record, False, alerts, signals
    return ({"p": partition, "s": states} if states else None), True, alerts, signals


def expire_record(record: dict, watermark: int, cfg: FraudConfig = CONFIG) -> dict | None:
    """Prune every rule state of a record against a partition watermark."""
    states = {}
    for rule, st in record["s"].items():
        kept = rules.expire(rule, st, watermark, cfg)
        if kept is not None:
            states[rule] = kept
    return {"p": record["p"], "s": states} if states else None


def _state_key(table: str, key: str) -> bytes:
    return json.dumps([table, key], separators=(",", ":")).encode()


def _state_value(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------- the loop


class FraudProcessor:
    """The consume-detect-produce loop. ``run`` blocks until ``stop()`` or a fatal error."""

    def __init__(self, batch_size: int = 500, poll_timeout: float = 0.2, process: str | None = None):
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.process = process or config.env("TELBUS_PROCESS_NAME", "worker")
        self.group = group_id()
        self.by_ip = by_ip_topic()
        self.state_topic = state_topic()
        self.alert_topic = alert_topic()
        # input topic -> (table, rules, key rule, expected event types)
        self.routes = {
            LOGIN_TOPIC: ("account", ACCOUNT_RULES, rules.LOGIN_BRUTE_FORCE, ("Login",)),
            self.by_ip: ("source-ip", IP_RULES, rules.CREDENTIAL_STUFFING, ("Login",)),
            CDR_TOPIC: ("cdr", CDR_RULES, rules.IRSF, ("Cdr",)),
            SUBSCRIBER_TOPIC: ("spend", SPEND_RULES, rules.NEW_SUBSCRIBER_SPEND, ("SubscriberCreated",)),
            RATED_TOPIC: ("spend", SPEND_RULES, rules.NEW_SUBSCRIBER_SPEND, ("RatedCdr",)),
        }
        self.states: dict[str, dict[int, dict[str, dict]]] = {
            t: {} for t in ("account", "source-ip", "cdr", "spend")}
        self.watermarks: dict[tuple[str, int], int] = {}
        self.last_sweep: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        log.info("fraud: config %s", CONFIG.describe())
        kafka.wait_for_cluster(120)
        self._ensure_topics()
        self.producer = transactions.producer(transactional_id())
        self.consumer = transactions.consumer(self.group, transactional_id())
        self.consumer.subscribe(list(self.routes), on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.ready.set()
        if on_ready:
            on_ready()
        log.info("fraud: consuming as %s (transactional.id %s)", self.group, transactional_id())
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        transactions.close(self.consumer, self.producer)

    # -- topics and state -------------------------------------------------------------
    def _ensure_topics(self) -> None:
        from confluent_kafka.admin import NewTopic

        a = kafka.admin()
        existing = a.list_topics(timeout=15).topics
        rf = int(config.env("TELBUS_TOPIC_REPLICATION", "1"))
        cat = catalog()
        want = {
            self.by_ip: (cat[LOGIN_TOPIC].partitions,
                         {"cleanup.policy": "delete", "retention.ms": str(BY_IP_RETENTION_MS)}),
            self.state_topic: (max(cat[t].partitions for t in (LOGIN_TOPIC, CDR_TOPIC, RATED_TOPIC)),
                               {"cleanup.policy": "compact"}),
        }
        if self.alert_topic != ALERT_TOPIC:
            want[self.alert_topic] = (cat[ALERT_TOPIC].partitions, dict(cat[ALERT_TOPIC].config))
        new = [NewTopic(name, num_partitions=n, replication_factor=rf, config=cfg)
               for name, (n, cfg) in want.items() if name not in existing]
        if new:
            for name, fut in a.create_topics(new).items():
                try:
                    fut.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        # wait until the metadata shows every partition (a fresh topic takes a moment)
        deadline = time.monotonic() + 60
        for name, (n, _cfg) in want.items():
            while True:
                t = a.list_topics(name, timeout=15).topics.get(name)
                if t is not None and t.error is None and len(t.partitions) >= n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fraud: topic {name} not ready")
                time.sleep(0.2)

    def _table_of(self, topic: str) -> str:
        return self.routes[topic][0]

    def _restore(self, wanted: set[tuple[str, int]]) -> None:
        """Rebuild the (table, partition) states in ``wanted`` from the committed changelog."""
        if not wanted:
            return
        parts = {p for _t, p in wanted}
        tables = {tp: {} for tp in wanted}
        reader = kafka.consumer(f"{self.group}-reader-{uuid.uuid4().hex[:8]}", **{
            "enable.partition.eof": True, "isolation.level": "read_committed"})
        try:
            ends = {}
            for p in parts:
                lo, hi = kafka.watermarks(reader, TopicPartition(self.state_topic, p))
                if hi > lo:
                    ends[p] = hi
            if ends:
                reader.assign([TopicPartition(self.state_topic, p, OFFSET_BEGINNING) for p in ends])
                done: set[int] = set()
                deadline = time.monotonic() + 300
                while len(done) < len(ends):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"fraud: restoring {self.state_topic} {sorted(ends)} timed out")
                    for m in reader.consume(1000, 0.5):
                        if m.error():
                            if m.error().code() == KafkaError._PARTITION_EOF:
                                done.add(m.partition())
                            continue
                        table, key = json.loads(m.key())
                        target = tables.get((table, m.partition()))
                        if target is None:
                            continue
                        if m.value() is None:
                            target.pop(key, None)
                        else:
                            target[key] = json.loads(m.value())
            for (table, p), data in tables.items():
                self.states[table][p] = data
            log.info("fraud: restored %d keys for %s", sum(len(d) for d in tables.values()),
                     sorted(wanted))
        finally:
            reader.close()
        self._gauge()

    def _on_assign(self, consumer, tps) -> None:
        metrics.REBALANCES.labels(self.process).inc()
        wanted = {(self._table_of(tp.topic), tp.partition) for tp in tps}
        self._restore({(t, p) for t, p in wanted if p not in self.states[t]})

    def _on_revoke(self, consumer, tps) -> None:
        for tp in tps:
            table = self._table_of(tp.topic)
            self.states[table].pop(tp.partition, None)
            self.watermarks.pop((table, tp.partition), None)
            self.last_sweep.pop((table, tp.partition), None)

    def _gauge(self) -> None:
        for table, parts in self.states.items():
            metrics.STATE_ENTRIES.labels(f"fraud_{table}").set(sum(len(d) for d in parts.values()))

    # -- the loop -----------------------------------------------------------------------
    def _step(self) -> None:
        msgs = self.consumer.consume(self.batch_size, self.poll_timeout)
        good = []
        for m in msgs:
            if m.error():
                log.warning("fraud: consumer error %s", m.error())
            else:
                good.append(m)
        if not good:
            return
        counts: Counter = Counter()
        t0 = time.monotonic()
        self.producer.begin_transaction()
        try:
            dirty: dict[tuple[str, int, str], dict | None] = {}
            touched: set[tuple[str, int]] = set()
            for m in good:
                self._handle(m, dirty, touched, counts)
            for table, p in sorted(touched):
                self._maybe_sweep(table, p, dirty, counts)
            for (table, p, key), record in dirty.items():
                self.producer.produce(self.state_topic,
                                      None if record is None else _state_value(record),
                                      _state_key(table, key), partition=p)
            transactions.commit(self.producer, self.consumer)
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
                if outcome.startswith("late_"):
                    metrics.LATE_EVENTS.labels(PROCESSOR).inc(n)
        metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe((time.monotonic() - t0) / len(good))
        self._gauge()

    def _rewind(self) -> None:
        """After an aborted transaction: committed offsets and committed state again."""
        transactions.rewind(self.consumer)
        wanted = {(t, p) for t, parts in self.states.items() for p in parts}
        for parts in self.states.values():
            parts.clear()
        self.watermarks.clear()
        self.last_sweep.clear()
        self._restore(wanted)

    def _bad(self, m, stage: str, reason: str, counts: Counter) -> None:
        if m.topic() in OWNED_TOPICS:
            log.warning("fraud: %s record %s[%s]@%s to DLQ: %s", stage, m.topic(), m.partition(),
                        m.offset(), reason)
            dlq.send(self.producer, m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                     stage, reason, original_headers=m.headers())
            counts[("dlq", None)] += 1
        else:
            counts[("skipped_invalid", None)] += 1

    def _handle(self, m, dirty: dict, touched: set, counts: Counter) -> None:
        topic, p = m.topic(), m.partition()
        counts[("consumed", topic)] += 1
        table, rule_names, key_rule, expected = self.routes[topic]
        stage = f"fraud.{table}"
        try:
            ev = codec.decode(m.value())
        except codec.DecodeError as exc:
            self._bad(m, stage, str(exc), counts)
            return
        et = ev.get("event_type")
        if et not in expected:
            if topic == SUBSCRIBER_TOPIC and et in catalog()[SUBSCRIBER_TOPIC].events:
                return  # PlanChanged, StatusChanged, BalanceRecharged: not for fraud
            self._bad(m, stage, f"unexpected event_type {et!r} on {topic} (expected "
                                f"{' or '.join(expected)})", counts)
            return
        origin = None
        if topic == self.by_ip:
            origin = next((v.decode() for k, v in (m.headers() or []) if k == ORIGIN_HEADER), "?")
        data = self.states[table].setdefault(p, {})
        try:
            key = rules.subject_of(key_rule, ev)
            ip = rules.subject_of(rules.CREDENTIAL_STUFFING, ev) if topic == LOGIN_TOPIC else None
            t = rules.event_time_of(ev)
            record, changed, alerts, signals = apply_rules(data.get(key), rule_names, ev, p,
                                                           origin=origin)
        except rules.InvalidEvent as exc:
            self._bad(m, stage, f"invalid {et}: {exc}", counts)
            return
        if changed:
            if record is None:
                if key in data:
                    del data[key]
                    dirty[(table, p, key)] = None
            else:
                data[key] = record
                dirty[(table, p, key)] = record
        for alert in alerts:
            self.producer.produce(self.alert_topic, codec.encode(alert), alert["subject"])
            counts[("produced", self.alert_topic)] += 1
            log.info("fraud: alert %s %s", alert["alert_id"], alert["evidence"])
        for s in signals:
            counts[(s, None)] += 1
        if ip is not None and ev["result"] != "SUCCESS":  # stuffing counts failures only
            self.producer.produce(self.by_ip, m.value(), ip,
                                  headers=[(ORIGIN_HEADER, str(p).encode())])
            counts[("produced", self.by_ip)] += 1
        wm = self.watermarks.get((table, p))
        self.watermarks[(table, p)] = t if wm is None else max(wm, t)
        touched.add((table, p))

    def _maybe_sweep(self, table: str, p: int, dirty: dict, counts: Counter) -> None:
        """Expire quiet keys of (table, p) when its event-time watermark moved enough."""
        wm = self.watermarks.get((table, p))
        if wm is None:
            return
        last = self.last_sweep.setdefault((table, p), wm)
        if wm - last < SWEEP_EVERY_MS:
            return
        self.last_sweep[(table, p)] = wm
        horizon = wm - CONFIG.allowed_lateness_ms
        data = self.states[table].get(p, {})
        for key in sorted(data):
            record = data[key]
            new = expire_record(record, horizon)
            if new == record:
                continue
            if new is None:
                del data[key]
                counts[("expired_keys", None)] += 1
            else:
                data[key] = new
            dirty[(table, p, key)] = new


# ---------------------------------------------------------------------- hosting


def _register_faust_service() -> None:
    """Run the loop inside ``telbus worker`` (processors.commands imports this module)."""
    from processors.hosting import host_in_worker

    host_in_worker("fraud", FraudProcessor)


if config.env("TELBUS_FRAUD_IN_WORKER", "1") == "1" and __name__ != "__main__":
    _register_faust_service()


def main() -> int:
    from processors.hosting import run_standalone

    return run_standalone("fraud", FraudProcessor)


if __name__ == "__main__":
    sys.exit(main())
