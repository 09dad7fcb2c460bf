"""The alarm correlation shell: oss.alarm.raw (+ oss.topology, bss.subscriber.events) ->
oss.incidents (IncidentEvent, key site_id), exactly once.

Layout (why one owner: see "Partitioning" in ``processors.alarms.correlate``)
======
    oss.alarm.raw (6) ---------\\   stage 1: forward          stage 2: correlate
    oss.topology (1, compacted) -->  group telbus-alarms-in  -->  <group>.correlation  -->  oss.incidents
    bss.subscriber.events (12) -/   (any number of members)      (ONE partition,          (key site_id)
                                                                   group telbus-alarms)
* Stage 1 decodes and validates every input record. Bad ones go to ``<topic>.dlq`` (the
  original bytes, ``telbus.error`` etc. headers) for oss.alarm.raw and oss.topology;
  bss.subscriber.events is dead-lettered by its owners (subscriptions, rating), so here a
  bad subscriber record is only counted (``subscriber_skipped``), never dead-lettered
  twice. Good records are forwarded as compact JSON to the single-partition internal
  topic: alarms and NetworkElements whole, subscribers reduced to (subscriber_id,
  event_time, access_ne_id) so no PII is copied; a tombstone on oss.topology removes the
  NE. Other subscriber event types are dropped here.
* Stage 2 is owned by whichever member of its group holds the single partition; other
  workers stand by. It applies the records in order with :mod:`correlate` and
  :mod:`topology` and publishes the IncidentEvents.

State
=====
Topology, placements and correlation state are plain dicts in memory (the pure modules'
mappings). Every key a batch changes is written to the compacted changelog
``<group>-state`` (key ``["<mapping>","<key>"]``, value JSON, tombstone on delete). When
the correlation partition is assigned the state is rebuilt from that changelog
(read_committed), so a new machine or a worker that lost its disk carries on exactly.

Exactly once
============
Each stage works in batches; each batch is one Kafka transaction holding everything the
batch produced (forwarded records and DLQ records; or IncidentEvents and changelog
records) and the consumer offsets (``send_offsets_to_transaction`` with the group
metadata). After a kill -9 the open transaction is aborted, state is rebuilt from the
committed changelog and input re-read from the committed offsets. The correlator also
ignores an alarm event_id it has already applied (producer retries).

Faust's own ``exactly_once`` is not used for the same reasons the rating shell gives
(``processors/rating/agent.py``): under it, table changelog writes can miss the
transaction that commits their offsets, and sends are put in the transaction of the
*destination* partition, which for a non-co-partitioned output (oss.incidents, the
single-partition funnel) is not the one that commits the input offset. An integration
test showed exactly that: after a kill -9 the ONU incidents were published twice.
As with rating, the loop uses confluent-kafka and runs inside ``telbus worker`` as a
Faust service on a thread.

Metrics (``telbus.metrics``)
=======
``telbus_events_consumed_total{topic}`` (raw alarms: topic="oss.alarm.raw"),
``telbus_events_produced_total{topic="oss.incidents"}``,
``telbus_processor_outcomes_total{processor="alarms", outcome}`` with outcomes
``alarm_<disposition>`` (opened, joined, dedup, cleared_root, cleared_symptom,
clear_no_active, stale_clear, duplicate_event), ``incident_<change>`` (opened, updated,
merged, cleared), ``dlq``, ``subscriber_skipped``; ``telbus_state_entries{table}`` per
state mapping; ``telbus_processing_seconds{processor="alarms"}``,
``telbus_event_latency_seconds{processor="alarms"}``.

Settings: ``TELBUS_ALARMS_GROUP`` (default ``telbus-alarms``) names the correlator's
group; the forwarders' group, the internal topic and the changelog derive from it.
Run alone (tests, debugging): ``python -m processors.alarms.agent``.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processors import aligned, transactions
from processors.alarms.correlate import CorrelationState, Correlator, InvalidAlarm, validate_alarm
from processors.alarms.topology import Topology, TopologyError, validate_ne, validate_subscriber
from telbus import codec, config, dlq, kafka, metrics

log = logging.getLogger("telbus.alarms")

PROCESSOR = "alarms"
ALARM_TOPIC = "oss.alarm.raw"
TOPOLOGY_TOPIC = "oss.topology"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
OUTPUT_TOPIC = "oss.incidents"
INPUTS = (ALARM_TOPIC, TOPOLOGY_TOPIC, SUBSCRIBER_TOPIC)
# Intake alignment: one merge group over every intake partition; at equal event time the
# network and the subscribers are known before the alarm that needs them.
_RANK = {TOPOLOGY_TOPIC: 0, SUBSCRIBER_TOPIC: 1, ALARM_TOPIC: 2}
GROUP = "telbus-alarms"
FUNNEL_RETENTION_MS = 7 * 24 * 3600 * 1000
TOPOLOGY_MAPPINGS = ("nes", "children", "subscribers", "subs_per_ne")


def group_id() -> str:
    return config.env("TELBUS_ALARMS_GROUP", GROUP)


def forward_group() -> str:
    return f"{group_id()}-in"


def funnel_topic() -> str:
    return f"{group_id()}.correlation"


def state_topic() -> str:
    return f"{group_id()}-state"


def _worker() -> str:
    return config.env("TELBUS_WORKER_ID", "1")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class TrackedMap(MutableMapping):
    """A dict that records which keys changed (for the changelog)."""

    def __init__(self, name: str, dirty: set, data: dict | None = None) -> None:
        self.name = name
        self._dirty = dirty
        self.data: dict = {} if data is None else data

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value) -> None:
        self.data[key] = value
        self._dirty.add((self.name, key))

    def __delitem__(self, key) -> None:
        del self.data[key]
        self._dirty.add((self.name, key))

    def __contains__(self, key) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key, default=None):
        return self.data.get(key, default)


class AlarmState:
    """Topology + correlation state over tracked maps, with changelog (de)serialisation."""

    def __init__(self) -> None:
        self.dirty: set[tuple[str, str]] = set()
        self.maps: dict[str, TrackedMap] = {}
        for name in TOPOLOGY_MAPPINGS:
            self.maps[f"topology.{name}"] = TrackedMap(f"topology.{name}", self.dirty)
        for name in CorrelationState.NAMES:
            self.maps[f"correlation.{name}"] = TrackedMap(f"correlation.{name}", self.dirty)
        self.topology = Topology(**{n: self.maps[f"topology.{n}"] for n in TOPOLOGY_MAPPINGS})
        self.correlator = Correlator(
            CorrelationState(**{n: self.maps[f"correlation.{n}"] for n in CorrelationState.NAMES}),
            self.topology,
        )

    def load(self, key: bytes, value: bytes | None) -> None:
        name, k = json.loads(key)
        m = self.maps.get(name)
        if m is None:
            return
        if value is None:
            m.data.pop(k, None)
        else:
            m.data[k] = json.loads(value)

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        for name, k in sorted(self.dirty):
            m = self.maps[name]
            yield _json([name, k]), (_json(m.data[k]) if k in m.data else None)

    def sizes(self) -> dict[str, int]:
        return {name: len(m) for name, m in self.maps.items()}


class AlarmProcessor:
    """Both stages' loops on one thread. ``run`` blocks until ``stop()`` or a fatal error."""

    def __init__(self, batch_size: int = 500, poll_timeout: float = 0.1, process: str | None = None):
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.process = process or config.env("TELBUS_PROCESS_NAME", "worker")
        self.state: AlarmState | None = None  # set while this member owns the correlation partition
        self._stop = threading.Event()
        self.in_consumer: Consumer | None = None
        self.in_producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.ready = threading.Event()
        # the intake in event-time order across all its partitions (processors/aligned.py)
        self.intake = aligned.AlignedInputs(_RANK, float(config.env("TELBUS_ALARMS_ALIGN_MS", "500")) / 1000,
                                            across_partitions=True)

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        kafka.wait_for_cluster(120)
        self._ensure_topics()
        common = {
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
        }
        self.in_producer = transactions.producer(f"{forward_group()}-{_worker()}")
        self.producer = transactions.producer(f"{group_id()}-{_worker()}")
        # static membership: a restarted worker gets its partitions back at once
        self.in_consumer = kafka.consumer(forward_group(), **common,
                                          **{"group.instance.id": f"{forward_group()}-{_worker()}"})
        self.in_consumer.subscribe(list(INPUTS), on_assign=self._on_intake_assign,
                                   on_revoke=self._on_intake_revoke, on_lost=self._on_intake_revoke)
        self.consumer = kafka.consumer(group_id(), **common,
                                       **{"group.instance.id": f"{group_id()}-{_worker()}"})
        self.consumer.subscribe([funnel_topic()], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.ready.set()
        if on_ready:
            on_ready()
        log.info("alarms: forwarding as %s, correlating as %s", forward_group(), group_id())
        try:
            while not self._stop.is_set():
                self._forward_step()
                self._correlate_step()
        finally:
            self._close()

    def _close(self) -> None:
        for c in (self.in_consumer, self.consumer):
            if c is not None:
                try:
                    c.close()
                except Exception:  # best effort: nothing uncommitted is at stake
                    pass
        for p in (self.in_producer, self.producer):
            if p is not None:
                p.flush(10)

    def _ensure_topics(self) -> None:
        from confluent_kafka.admin import NewTopic

        a = kafka.admin()
        existing = a.list_topics(timeout=15).topics
        rf = int(config.env("TELBUS_TOPIC_REPLICATION", "1"))
        wanted = [
            NewTopic(funnel_topic(), num_partitions=1, replication_factor=rf,
                     config={"cleanup.policy": "delete", "retention.ms": str(FUNNEL_RETENTION_MS)}),
            NewTopic(state_topic(), num_partitions=1, replication_factor=rf,
                     config={"cleanup.policy": "compact"}),
        ]
        missing = [t for t in wanted if t.topic not in existing]
        if not missing:
            return
        for name, fut in a.create_topics(missing).items():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    # -- correlation state ownership ----------------------------------------------------
    def _restore(self) -> AlarmState:
        st = AlarmState()
        reader = kafka.consumer(f"{group_id()}-reader-{uuid.uuid4().hex[:8]}", **{
            "enable.partition.eof": True, "isolation.level": "read_committed"})
        try:
            lo, hi = kafka.watermarks(reader, TopicPartition(state_topic(), 0))
            if hi > lo:
                reader.assign([TopicPartition(state_topic(), 0, OFFSET_BEGINNING)])
                deadline = time.monotonic() + 300
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"alarms: restoring {state_topic()} timed out")
                    msgs = reader.consume(1000, 0.5)
                    if any(m.error() and m.error().code() == KafkaError._PARTITION_EOF for m in msgs):
                        for m in msgs:
                            if not m.error():
                                st.load(m.key(), m.value())
                        break
                    for m in msgs:
                        if not m.error():
                            st.load(m.key(), m.value())
        finally:
            reader.close()
        st.dirty.clear()
        self._gauges(st)
        log.info("alarms: correlation state restored: %s", st.sizes())
        return st

    def _on_intake_assign(self, consumer, tps) -> None:
        self.intake.assign(tps)

    def _on_intake_revoke(self, consumer, tps) -> None:
        self.intake.revoke(tps)

    def _on_assign(self, consumer, tps) -> None:
        metrics.REBALANCES.labels(self.process).inc()
        if any(tp.topic == funnel_topic() for tp in tps):
            self.state = self._restore()

    def _on_revoke(self, consumer, tps) -> None:
        if any(tp.topic == funnel_topic() for tp in tps):
            self.state = None

    @staticmethod
    def _gauges(st: AlarmState) -> None:
        for name, n in st.sizes().items():
            metrics.STATE_ENTRIES.labels(f"alarms_{name.replace('.', '_')}").set(n)

    # -- transactions ---------------------------------------------------------------------
    @staticmethod
    def _good(msgs) -> list:
        good = []
        for m in msgs:
            if m.error():
                log.warning("alarms: consumer error %s", m.error())
            else:
                good.append(m)
        return good

    def _count(self, counts: Counter) -> None:
        for (kind, label), n in counts.items():
            if kind == "consumed":
                metrics.EVENTS_CONSUMED.labels(self.process, label).inc(n)
            elif kind == "produced":
                metrics.EVENTS_PRODUCED.labels(self.process, label).inc(n)
            else:
                metrics.OUTCOMES.labels(PROCESSOR, label).inc(n)

    # -- stage 1: decode, validate, forward ----------------------------------------------
    def _forward_step(self) -> None:
        """Forward the intake to the funnel in event-time order across every intake
        partition (processors/aligned.py): an alarm storm's sites sit in different
        partitions, and a backlog fetched one site far ahead of another would clear
        symptoms before their root cause arrived. Tombstones and undecodable records keep
        their place in their partition (``_forward`` handles them)."""
        now = time.monotonic()
        for m in self._good(self.in_consumer.consume(self.batch_size, self.poll_timeout)):
            self.intake.seen(m)
            try:
                ev = codec.decode(m.value()) if m.value() is not None else None
            except codec.DecodeError:
                ev = None
            self.intake.add(m, ev, now)
        good = self.intake.release(self.in_consumer, now)
        if not good:
            return
        counts: Counter = Counter()
        done: dict[tuple[str, int], int] = {}
        self.in_producer.begin_transaction()
        for m, ev in good:
            self._forward(m, counts, ev)
            key = (m.topic(), m.partition())
            done[key] = max(done.get(key, 0), m.offset() + 1)
        # only what was forwarded is committed: records still waiting are fetched again
        if transactions.commit_or_abort(self.in_producer, self.in_consumer, transactions.positions(done), PROCESSOR):
            self._count(counts)
        else:
            self.intake.clear()
            transactions.rewind(self.in_consumer)

    def _dead_letter(self, m, stage: str, reason: str, counts: Counter) -> None:
        log.warning("alarms: %s[%d]@%d to DLQ: %s", m.topic(), m.partition(), m.offset(), reason)
        dlq.send(self.in_producer, m.topic(), m.partition(), m.offset(), m.key(), m.value(), stage, reason,
                 original_headers=m.headers())
        counts[("outcome", "dlq")] += 1

    def _send_funnel(self, key: bytes | None, kind: str, event: dict, m) -> None:
        ts_type, ts = m.timestamp()
        self.in_producer.produce(funnel_topic(), _json({"kind": kind, "event": event, "ts": ts}), key,
                                 partition=0)

    def _forward(self, m, counts: Counter, ev: dict | None = None) -> None:
        topic = m.topic()
        counts[("consumed", topic)] += 1
        if topic == TOPOLOGY_TOPIC and m.value() is None:  # compaction tombstone: the NE is gone
            if m.key():
                self._send_funnel(m.key(), "ne_removed", {"ne_id": m.key().decode()}, m)
            return
        if ev is None:
            try:
                ev = codec.decode(m.value())
            except codec.DecodeError as exc:
                if topic == SUBSCRIBER_TOPIC:
                    counts[("outcome", "subscriber_skipped")] += 1
                else:
                    self._dead_letter(m, "alarms.decode", str(exc), counts)
                return
        et = ev.get("event_type")
        try:
            if topic == ALARM_TOPIC:
                if et != "Alarm":
                    raise InvalidAlarm(f"unexpected event_type {et!r} on {topic} (expected Alarm)")
                validate_alarm(ev)
                self._send_funnel(m.key(), "alarm", ev, m)
            elif topic == TOPOLOGY_TOPIC:
                if et != "NetworkElement":
                    raise TopologyError(f"unexpected event_type {et!r} on {topic} (expected NetworkElement)")
                validate_ne(ev)
                self._send_funnel(m.key(), "ne", ev, m)
            elif et == "SubscriberCreated":
                placement = {"event_type": et, "subscriber_id": ev.get("subscriber_id"),
                             "event_time": ev.get("event_time"), "access_ne_id": ev.get("access_ne_id")}
                try:
                    validate_subscriber(placement)
                except TopologyError:
                    counts[("outcome", "subscriber_skipped")] += 1
                    return
                self._send_funnel(m.key(), "subscriber", placement, m)
        except ValueError as exc:
            self._dead_letter(m, "alarms.validate", str(exc), counts)

    # -- stage 2: correlate ---------------------------------------------------------------
    def _correlate_step(self) -> None:
        good = self._good(self.consumer.consume(self.batch_size, self.poll_timeout))
        if not good:
            return
        st = self.state
        if st is None:  # cannot happen while we own the partition; be safe
            transactions.rewind(self.consumer)
            return
        counts: Counter = Counter()
        t0 = time.monotonic()
        latest_ts = None
        self.producer.begin_transaction()
        try:
            for m in good:
                ts = self._apply(st, m, counts)
                latest_ts = ts or latest_ts
            for key, value in st.changes():
                self.producer.produce(state_topic(), value, key, partition=0)
        except Exception:
            self.producer.abort_transaction(60)
            raise
        if transactions.commit_or_abort(self.producer, self.consumer, who=PROCESSOR):
            st.dirty.clear()
            self._count(counts)
            metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe((time.monotonic() - t0) / len(good))
            if latest_ts and counts[("produced", OUTPUT_TOPIC)]:
                metrics.EVENT_LATENCY_SECONDS.labels(PROCESSOR).observe(max(0.0, time.time() - latest_ts / 1000))
            self._gauges(st)
        else:
            self.state = self._restore()
            transactions.rewind(self.consumer)

    def _apply(self, st: AlarmState, m, counts: Counter) -> int | None:
        try:
            item = json.loads(m.value())
            kind, payload = item["kind"], item["event"]
            if kind == "alarm":
                outcome = st.correlator.process(payload)
                counts[("outcome", f"alarm_{outcome.disposition.lower()}")] += 1
                for e in outcome.events:
                    self.producer.produce(OUTPUT_TOPIC, codec.encode(e), e["site_id"].encode())
                    counts[("produced", OUTPUT_TOPIC)] += 1
                    counts[("outcome", f"incident_{e['change'].lower()}")] += 1
            elif kind == "ne":
                st.topology.apply_ne(payload)
            elif kind == "ne_removed":
                st.topology.remove_ne(payload["ne_id"])
            elif kind == "subscriber":
                st.topology.apply_subscriber(payload)
            else:
                raise ValueError(f"unknown record kind {kind!r}")
            return item.get("ts")
        except (ValueError, KeyError, TypeError) as exc:
            # validated in stage 1, so this is a foreign or corrupt record: keep it, go on
            log.error("alarms: cannot apply %s@%d: %s", m.topic(), m.offset(), exc)
            dlq.send(self.producer, m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                     "alarms.correlate", f"invalid internal record: {exc}")
            counts[("outcome", "dlq")] += 1
            return None


# -- hosting ------------------------------------------------------------------------------

def _register_faust_service() -> None:
    """Run the loop inside ``telbus worker`` (processors.commands imports this module)."""
    from processors.hosting import host_in_worker

    host_in_worker("alarms", AlarmProcessor)


if config.env("TELBUS_ALARMS_IN_WORKER", "1") == "1":
    _register_faust_service()


def main() -> int:
    from processors.hosting import run_standalone

    return run_standalone("alarms", AlarmProcessor)


if __name__ == "__main__":
    sys.exit(main())
