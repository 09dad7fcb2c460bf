"""Faust shell for alarm correlation: oss.alarm.raw (+ oss.topology, bss.subscriber.events)
-> oss.incidents, keyed by the incident's site_id.

Layout (why: see "Partitioning" in ``processors.alarms.correlate``)

    oss.alarm.raw (6 partitions)   --alarms_in-------\\
    oss.topology  (compacted)      --topology_in------>  <app id>-alarms-correlation  --correlate-->  oss.incidents
    bss.subscriber.events (12)     --subscribers_in--/     (internal, ONE partition)

- The three ``*_in`` agents decode and validate their input. A record that cannot be
  decoded or is malformed goes to ``<topic>.dlq`` (original bytes, reason headers) for
  oss.alarm.raw and oss.topology. bss.subscriber.events is owned by the subscription and
  rating processors, which dead-letter its bad records; here such a record is only
  counted (``subscriber_skipped``) so one bad record does not appear in the DLQ twice.
  Good records are forwarded as compact JSON into the single-partition internal topic:
  alarms and NetworkElements whole, subscribers reduced to (subscriber_id, event_time,
  access_ne_id), so no PII is copied. A tombstone on oss.topology removes the NE.
- ``correlate`` is the only agent that owns correlation state. Its tables all have one
  partition (the internal topic's), are changelog-backed and are passed to the pure
  ``Topology`` / ``Correlator`` as mappings. Everything happens inside the input
  record's transaction (processing_guarantee exactly_once): state changes, incident
  events and the offset commit go together.
- Metrics (``telbus.metrics``): ``telbus_processor_outcomes_total{processor="alarms"}``
  with outcomes ``alarm_<disposition>`` (opened, joined, dedup, cleared_root,
  cleared_symptom, clear_no_active, stale_clear, duplicate_event), ``incident_<change>``
  (opened, updated, merged, cleared), ``dlq`` and ``subscriber_skipped``; raw alarms are
  ``telbus_events_consumed_total{topic="oss.alarm.raw"}``.
"""
from __future__ import annotations

import json
import logging
import time

from processors import dlq
from processors.alarms.correlate import CorrelationState, Correlator, InvalidAlarm, validate_alarm
from processors.alarms.topology import Topology, TopologyError, validate_ne, validate_subscriber
from processors.app import app, input_topic, output_topic
from telbus import codec, config, metrics

log = logging.getLogger(__name__)

PROCESSOR = "alarms"
ALARM_TOPIC = "oss.alarm.raw"
TOPOLOGY_TOPIC = "oss.topology"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
OUTPUT_TOPIC = "oss.incidents"
FUNNEL_TOPIC = f"{app.conf.id}-alarms-correlation"
FUNNEL_RETENTION_MS = 7 * 24 * 3600 * 1000

alarm_raw = input_topic(ALARM_TOPIC)
topology_raw = input_topic(TOPOLOGY_TOPIC)
subscriber_raw = input_topic(SUBSCRIBER_TOPIC)
incidents_out = output_topic(OUTPUT_TOPIC)
funnel = app.topic(
    FUNNEL_TOPIC,
    partitions=1,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    internal=True,
    config={"cleanup.policy": "delete", "retention.ms": str(FUNNEL_RETENTION_MS)},
)


def _table(name: str, help: str):
    return app.Table(
        f"alarms-{name}",
        partitions=1,  # the funnel's single partition; keys and values are JSON
        help=help,
    )


topology = Topology(
    nes=_table("nes", "ne_id -> NetworkElement (parent, site, services)"),
    children=_table("children", "ne_id -> sorted child ne_ids"),
    subscribers=_table("subscribers", "subscriber_id -> access NE placement"),
    subs_per_ne=_table("subs-per-ne", "ne_id -> subscribers placed on it"),
)
state = CorrelationState(
    incidents=_table("incidents", "incident_id -> incident"),
    active=_table("active", "ne_id -> {probable_cause: active alarm}"),
    keys=_table("keys", "reduction key -> recent transitions, last incident"),
    open_roots=_table("open-roots", "root ne_id -> open incident ids"),
    seen=_table("seen", "event_id -> event_time (idempotence window)"),
    meta=_table("meta", "watermark, next sweep"),
)
correlator = Correlator(state, topology)


def _process() -> str:
    return config.env("TELBUS_PROCESS_NAME", "worker")


def _outcome(name: str) -> None:
    metrics.OUTCOMES.labels(PROCESSOR, name).inc()


def _forward_value(kind: str, event: dict, message) -> bytes:
    return json.dumps(
        {"kind": kind, "event": event, "ts": message.timestamp},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


async def _dead_letter(event, stage: str, reason: str) -> None:
    log.warning("alarms: %s record %s[%s]@%s to DLQ: %s", stage, event.message.topic,
                event.message.partition, event.message.offset, reason)
    await dlq.send(event, stage, reason)
    _outcome("dlq")


# ---------------------------------------------------------------------- forwarders
@app.agent(alarm_raw, name="alarms-in")
async def alarms_in(stream):
    async for event in stream.events():
        metrics.EVENTS_CONSUMED.labels(_process(), ALARM_TOPIC).inc()
        try:
            alarm = codec.decode(event.value)
            if alarm.get("event_type") != "Alarm":
                raise InvalidAlarm(f"unexpected event_type {alarm.get('event_type')!r} on {ALARM_TOPIC}")
            validate_alarm(alarm)
        except (codec.DecodeError, ValueError) as exc:
            await _dead_letter(event, "alarms.decode", str(exc))
            continue
        await funnel.send(key=alarm["site_id"].encode(), value=_forward_value("alarm", alarm, event.message))


@app.agent(topology_raw, name="alarms-topology-in")
async def topology_in(stream):
    async for event in stream.events():
        metrics.EVENTS_CONSUMED.labels(_process(), TOPOLOGY_TOPIC).inc()
        if event.value is None:  # compaction tombstone: the NE is gone
            if event.key:
                ne_id = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
                await funnel.send(key=event.key if isinstance(event.key, bytes) else ne_id.encode(),
                                  value=_forward_value("ne_removed", {"ne_id": ne_id}, event.message))
            continue
        try:
            ne = codec.decode(event.value)
            if ne.get("event_type") != "NetworkElement":
                raise TopologyError(f"unexpected event_type {ne.get('event_type')!r} on {TOPOLOGY_TOPIC}")
            validate_ne(ne)
        except (codec.DecodeError, ValueError) as exc:
            await _dead_letter(event, "alarms.topology", str(exc))
            continue
        await funnel.send(key=ne["ne_id"].encode(), value=_forward_value("ne", ne, event.message))


@app.agent(subscriber_raw, name="alarms-subscribers-in")
async def subscribers_in(stream):
    async for event in stream.events():
        try:
            sub = codec.decode(event.value)
            if sub.get("event_type") != "SubscriberCreated":
                continue
            placement = {
                "event_type": "SubscriberCreated",
                "subscriber_id": sub.get("subscriber_id"),
                "event_time": sub.get("event_time"),
                "access_ne_id": sub.get("access_ne_id"),
            }
            validate_subscriber(placement)
        except (codec.DecodeError, ValueError) as exc:
            log.info("alarms: skipping subscriber record %s[%s]@%s: %s", event.message.topic,
                     event.message.partition, event.message.offset, exc)
            _outcome("subscriber_skipped")
            continue
        await funnel.send(key=placement["subscriber_id"].encode(),
                          value=_forward_value("subscriber", placement, event.message))


# ---------------------------------------------------------------------- correlator
@app.on_partitions_assigned.connect
async def _on_assigned(sender, assigned, **kwargs) -> None:
    # tables may have been restored from their changelogs: drop derived caches
    topology.invalidate()


async def _publish(events: list[dict], source_ts: float | None) -> None:
    for e in events:
        await incidents_out.send(key=e["site_id"].encode(), value=e)
        metrics.EVENTS_PRODUCED.labels(_process(), OUTPUT_TOPIC).inc()
        _outcome(f"incident_{e['change'].lower()}")
        if source_ts:
            metrics.EVENT_LATENCY_SECONDS.labels(PROCESSOR).observe(max(0.0, time.time() - source_ts))


def _apply(item: dict) -> list[dict]:
    kind, payload = item["kind"], item["event"]
    if kind == "alarm":
        outcome = correlator.process(payload)
        _outcome(f"alarm_{outcome.disposition.lower()}")
        return outcome.events
    if kind == "ne":
        topology.apply_ne(payload)
    elif kind == "ne_removed":
        topology.remove_ne(payload["ne_id"])
    elif kind == "subscriber":
        topology.apply_subscriber(payload)
    else:
        raise ValueError(f"unknown funnel record kind {kind!r}")
    return []


@app.agent(funnel, name="alarms-correlate")
async def correlate(stream):
    async for event in stream.events():
        started = time.perf_counter()
        try:
            item = json.loads(event.value)
            events = _apply(item)
        except (ValueError, KeyError, TypeError) as exc:
            # validated before the funnel, so this is a bug or a foreign record: keep going
            log.error("alarms: cannot apply %s@%s: %s", FUNNEL_TOPIC, event.message.offset, exc)
            await _dead_letter(event, "alarms.correlate", f"invalid funnel record: {exc}")
            continue
        await _publish(events, item.get("ts"))
        metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe(time.perf_counter() - started)


@app.timer(30.0)
async def _state_gauges() -> None:
    for name in CorrelationState.NAMES:
        table = getattr(state, name)
        try:
            metrics.STATE_ENTRIES.labels(f"alarms-{name}").set(len(table))
        except Exception:  # table not assigned to this worker (standby): nothing to report
            pass
