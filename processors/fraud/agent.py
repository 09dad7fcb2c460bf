"""Faust shell for fraud detection (CONTRACT §4 "Fraud detection") -> sec.fraud.alerts.

Layout

    sec.login.events (key account) --fraud-logins--> LOGIN_BRUTE_FORCE, IMPOSSIBLE_TRAVEL
         |                                            table fraud-account (per account)
         +--> <app id>-fraud-logins-by-ip-repartition (failed logins only: key source_ip,
         |    original bytes, header telbus.fraud.origin = source partition)
                                   --fraud-logins-by-ip--> CREDENTIAL_STUFFING
                                                            table fraud-source-ip
    net.cdr.raw (key subscriber_id) --fraud-cdrs--> IRSF, SIMBOX
                                                    table fraud-cdr (per subscriber)
    bss.subscriber.events + bss.cdr.rated (co-partitioned by subscriber_id)
                                    --fraud-spend--> NEW_SUBSCRIBER_SPEND
                                                    table fraud-spend (per subscriber)
    every rule --> sec.fraud.alerts, key = the alert's subject

- The rule logic is ``processors.fraud.rules`` (pure, event time only); this module only
  decodes, loads/stores state, publishes and counts. Each table value is
  ``{"p": <partition>, "s": {<rule>: <rule state>}}``; a key whose rule states are all
  idle is deleted. Tables are changelog-backed and, with processing_guarantee
  exactly_once, the state change, the alerts and the offset commit of one input record
  are one transaction: a restart neither misses nor repeats an alert. Under at-least-once
  a re-delivered record is a duplicate event id inside the window and is ignored.
- Keys that go quiet are expired by a sweep driven by event time: when a partition's
  watermark (max event time processed on it by this worker) has advanced by
  ``SWEEP_EVERY_MS`` since the last sweep of that partition, the keys stored from that
  partition are pruned against ``watermark - allowed lateness`` and deleted when idle.
  Only event time drives it, never the wall clock.
- Bad input: sec.login.events is owned by this processor, so an undecodable or invalid
  login goes to ``sec.login.events.dlq``. net.cdr.raw, bss.subscriber.events and
  bss.cdr.rated are owned by the rating / subscription processors, which dead-letter
  their bad records; here such a record is only counted (``skipped_invalid``) so a bad
  record does not appear in a DLQ twice.
- Metrics (``telbus.metrics``): ``telbus_processor_outcomes_total{processor="fraud"}``
  with outcomes ``alert_<RULE>``, ``suppressed_<RULE>``, ``late_<RULE>``, ``duplicate``,
  ``dlq``, ``skipped_invalid``, ``expired_keys``; ``telbus_late_events_total{processor=
  "fraud"}``; ``telbus_events_consumed_total`` / ``telbus_events_produced_total``;
  ``telbus_state_entries{table=...}`` after each sweep.
- Configuration: ``FraudConfig.from_env()`` at import, so a bad ``TELBUS_FRAUD_*`` value
  stops the worker at start with a message naming the variable.
"""
from __future__ import annotations

import logging
import time

from processors import dlq
from processors.app import app, input_topic, output_topic
from processors.fraud import rules
from processors.fraud.config import FraudConfig
from telbus import codec, config, metrics
from topics import catalog

log = logging.getLogger(__name__)

PROCESSOR = "fraud"
LOGIN_TOPIC = "sec.login.events"
CDR_TOPIC = "net.cdr.raw"
SUBSCRIBER_TOPIC = "bss.subscriber.events"
RATED_TOPIC = "bss.cdr.rated"
ALERT_TOPIC = "sec.fraud.alerts"
BY_IP_TOPIC = f"{app.conf.id}-fraud-logins-by-ip-repartition"
BY_IP_RETENTION_MS = 7 * 24 * 3600 * 1000
SWEEP_EVERY_MS = 10 * 60 * 1000
#: Header on the repartitioned logins: the sec.login.events partition they came from.
ORIGIN_HEADER = "telbus.fraud.origin"

#: Input topics whose bad records this processor dead-letters (it is their only reader).
OWNED_TOPICS = {LOGIN_TOPIC}

CONFIG = FraudConfig.from_env()
log.info("fraud config: %s", CONFIG.describe())

LOGIN_PARTITIONS = catalog()[LOGIN_TOPIC].partitions
SUBSCRIBER_PARTITIONS = catalog()[CDR_TOPIC].partitions

logins_raw = input_topic(LOGIN_TOPIC)
cdrs_raw = input_topic(CDR_TOPIC)
spend_raw = app.topic(SUBSCRIBER_TOPIC, RATED_TOPIC, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw", internal=False)
logins_by_ip = app.topic(
    BY_IP_TOPIC,
    partitions=LOGIN_PARTITIONS,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    internal=True,
    config={"cleanup.policy": "delete", "retention.ms": str(BY_IP_RETENTION_MS)},
)
alerts_out = output_topic(ALERT_TOPIC)


def _table(name: str, partitions: int, help: str):
    return app.Table(f"fraud-{name}", partitions=partitions, help=help)


account_table = _table("account", LOGIN_PARTITIONS, "account -> brute force / travel state")
source_ip_table = _table("source-ip", LOGIN_PARTITIONS, "source_ip -> credential stuffing state")
cdr_table = _table("cdr", SUBSCRIBER_PARTITIONS, "subscriber_id -> IRSF / SIMBOX state")
spend_table = _table("spend", SUBSCRIBER_PARTITIONS, "subscriber_id -> new subscriber spend state")

ACCOUNT_RULES = (rules.LOGIN_BRUTE_FORCE, rules.IMPOSSIBLE_TRAVEL)
IP_RULES = (rules.CREDENTIAL_STUFFING,)
CDR_RULES = (rules.IRSF, rules.SIMBOX)
SPEND_RULES = (rules.NEW_SUBSCRIBER_SPEND,)


def _process() -> str:
    return config.env("TELBUS_PROCESS_NAME", "worker")


def _outcome(name: str, n: int = 1) -> None:
    metrics.OUTCOMES.labels(PROCESSOR, name).inc(n)


# ---------------------------------------------------------------------- state handling


def apply_rules(record: dict | None, rule_names, event: dict, partition: int,
                cfg: FraudConfig = CONFIG, origin: str | None = None):
    """Run ``rule_names`` over one event against a table record.

    Returns ``(new_record_or_None, changed, alerts, signals)``; ``signals`` is a list of
    outcome names for the metrics. Raises ``rules.InvalidEvent`` before changing anything.
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


def _store(table, key: str, record: dict | None, changed: bool) -> None:
    if not changed:
        return
    if record is None:
        if key in table:
            del table[key]
    else:
        table[key] = record


async def _publish(alerts: list[dict]) -> None:
    for alert in alerts:
        await alerts_out.send(key=alert["subject"].encode(), value=alert)
        metrics.EVENTS_PRODUCED.labels(_process(), ALERT_TOPIC).inc()
        log.info("fraud alert %s %s", alert["alert_id"], alert["evidence"])


def _count(signals: list[str]) -> None:
    for s in signals:
        _outcome(s)
        if s.startswith("late_"):
            metrics.LATE_EVENTS.labels(PROCESSOR).inc()


class _Sweeper:
    """Event-time driven expiry of quiet keys, per (table, partition)."""

    def __init__(self, table, name: str):
        self.table, self.name = table, name
        self.watermark: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def maybe_sweep(self, partition: int, event_time: int) -> None:
        wm = max(self.watermark.get(partition, event_time), event_time)
        self.watermark[partition] = wm
        last = self.last.setdefault(partition, wm)
        if wm - last < SWEEP_EVERY_MS:
            return
        self.last[partition] = wm
        horizon = wm - CONFIG.allowed_lateness_ms
        total = 0
        updates = []
        for key, record in list(self.table.items()):
            total += 1
            if not record or record.get("p") != partition:
                continue
            new = expire_record(record, horizon)
            if new != record:
                updates.append((key, new))
        for key, new in updates:
            _store(self.table, key, new, True)
        expired = sum(1 for _, new in updates if new is None)
        if expired:
            _outcome("expired_keys", expired)
        metrics.STATE_ENTRIES.labels(self.name).set(total - expired)


_sweepers = {
    t.name: _Sweeper(t, t.name) for t in (account_table, source_ip_table, cdr_table, spend_table)
}


def _origin(message) -> str:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for k, v in items:
        if k == ORIGIN_HEADER:
            return v.decode() if isinstance(v, bytes) else str(v)
    return "?"


async def _bad(event, stage: str, reason: str) -> None:
    msg = event.message
    if msg.topic in OWNED_TOPICS:
        log.warning("fraud: %s record %s[%s]@%s to DLQ: %s", stage, msg.topic, msg.partition,
                    msg.offset, reason)
        await dlq.send(event, stage, reason)
        _outcome("dlq")
    else:
        log.debug("fraud: skipping bad record %s[%s]@%s: %s", msg.topic, msg.partition,
                  msg.offset, reason)
        _outcome("skipped_invalid")


def _decode(event, expected: tuple[str, ...]) -> tuple[dict | None, str | None]:
    """Decoded event, or (None, reason) for bad input, or (None, None) to ignore."""
    try:
        ev = codec.decode(event.value)
    except codec.DecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - anything undecodable is bad input
        return None, f"decode failed: {exc}"
    etype = ev.get("event_type")
    if etype in expected:
        return ev, None
    if event.message.topic == SUBSCRIBER_TOPIC:
        return None, None  # PlanChanged, StatusChanged, ...: not for fraud
    return None, f"unexpected event_type {etype!r} on {event.message.topic}"


async def _handle(event, table, rule_names, subject_rule, expected, stage,
                  also_keyed_by=(), origin: str | None = None) -> dict | None:
    """Decode, evaluate, store, publish, count one record. Returns the decoded event."""
    start = time.perf_counter()
    msg = event.message
    metrics.EVENTS_CONSUMED.labels(_process(), msg.topic).inc()
    ev, reason = _decode(event, expected)
    if ev is None:
        if reason:
            await _bad(event, stage, reason)
        return None
    try:
        key = rules.subject_of(subject_rule, ev)
        for other in also_keyed_by:  # validated before any state changes
            rules.subject_of(other, ev)
        t = rules.event_time_of(ev)
        record, changed, alerts, signals = apply_rules(table.get(key), rule_names, ev,
                                                       msg.partition, origin=origin)
    except rules.InvalidEvent as exc:
        await _bad(event, stage, f"invalid: {exc}")
        return None
    _store(table, key, record, changed)
    await _publish(alerts)
    _count(signals)
    _sweepers[table.name].maybe_sweep(msg.partition, t)
    metrics.PROCESSING_SECONDS.labels(PROCESSOR).observe(time.perf_counter() - start)
    return ev


# ---------------------------------------------------------------------- agents


@app.agent(logins_raw, name="fraud-logins")
async def fraud_logins(stream):
    async for event in stream.events():
        ev = await _handle(event, account_table, ACCOUNT_RULES, rules.LOGIN_BRUTE_FORCE,
                           ("Login",), "fraud.logins", also_keyed_by=(rules.CREDENTIAL_STUFFING,))
        if ev is not None and ev.get("result") != "SUCCESS":  # stuffing counts failures only
            ip = rules.subject_of(rules.CREDENTIAL_STUFFING, ev)
            await logins_by_ip.send(key=ip.encode(), value=event.value,
                                    headers=[(ORIGIN_HEADER, str(event.message.partition).encode())])


@app.agent(logins_by_ip, name="fraud-logins-by-ip")
async def fraud_logins_by_ip(stream):
    async for event in stream.events():
        await _handle(event, source_ip_table, IP_RULES, rules.CREDENTIAL_STUFFING, ("Login",),
                      "fraud.stuffing", origin=_origin(event.message))


@app.agent(cdrs_raw, name="fraud-cdrs")
async def fraud_cdrs(stream):
    async for event in stream.events():
        await _handle(event, cdr_table, CDR_RULES, rules.IRSF, ("Cdr",), "fraud.cdrs")


@app.agent(spend_raw, name="fraud-spend")
async def fraud_spend(stream):
    async for event in stream.events():
        await _handle(event, spend_table, SPEND_RULES, rules.NEW_SUBSCRIBER_SPEND,
                      ("SubscriberCreated", "RatedCdr"), "fraud.spend")
