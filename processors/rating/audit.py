"""``telbus audit rating --subscriber ID --period YYYYMM``: re-rate from the log and diff.

Reads ``bss.tariff.plans``, ``bss.subscriber.events``, ``net.cdr.raw`` and
``bss.cdr.rated`` with read_committed, group-less consumers that never commit: no
production topic, consumer group or state is touched. The subscriber's whole history is
replayed through :mod:`processors.rating.rules` (balances and allowances depend on what
came before the period) in the contract's order -- event time; ties: plans, then
subscriber events, then CDRs, then offset -- and the RatedCdrs of the asked period are
compared field by field with the ones in ``bss.cdr.rated``.

Records are matched by cdr_id and occurrence (the n-th RatedCdr for a cdr_id in the
re-rating against the n-th one in the topic), so a DUPLICATE lines up with its own record.
Invalid records (what the live processor dead-letters) are skipped the same way.
Output: one line per CDR that differs, then a summary; ``--format json`` gives the same
as one JSON object. Exit 0 when they agree, 1 when they differ.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Iterable

from processors.rating import rules

PLANS, SUBSCRIBER_EVENTS, CDRS, RATED = "bss.tariff.plans", "bss.subscriber.events", "net.cdr.raw", "bss.cdr.rated"

FIELDS = ("status", "reject_reason", "service", "direction", "zone", "billed_units", "free_units", "amount_li",
          "plan_id", "plan_version", "billing_period", "balance_after_li", "rated_at", "subscriber_id")


# -- pure part ----------------------------------------------------------------------------

def rerate(subscriber_id: str, plans: Iterable[tuple[int, dict]], subscriber_events: Iterable[tuple[int, dict]],
           cdrs: Iterable[tuple[int, dict]]) -> list[dict]:
    """Re-rate one subscriber from ``(offset, event)`` lists; returns every RatedCdr, in order."""
    timeline = []
    for source, items in ((0, plans), (1, subscriber_events), (2, cdrs)):
        for offset, ev in items:
            if not isinstance(ev.get("event_time"), int) or isinstance(ev.get("event_time"), bool):
                continue
            if source and ev.get("subscriber_id") != subscriber_id:
                continue
            timeline.append(((ev["event_time"], source, offset), ev))
    timeline.sort(key=lambda x: x[0])
    catalog: dict = {}
    state = None
    out: list[dict] = []
    for (_, source, _), ev in timeline:
        if source == 0:
            if ev.get("event_type") == "TariffPlan":
                rules.catalog_add(catalog, ev)   # an invalid plan is skipped, as live
        elif source == 1:
            if rules.validate_subscriber_event(ev) is None:
                state, _ = rules.apply_subscriber_event(state, ev, catalog)
        elif ev.get("event_type") == "Cdr" and rules.validate_cdr(ev) is None:
            state, outs = rules.rate_cdr(state, ev, catalog)
            out.extend(o for o in outs if o["event_type"] == "RatedCdr")
    return out


def _occurrences(records: Iterable[dict]) -> dict[tuple[str, int], dict]:
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for r in records:
        n = seen[r["cdr_id"]]
        seen[r["cdr_id"]] += 1
        out[(r["cdr_id"], n)] = r
    return out


def diff(expected: list[dict], live: list[dict], period: str) -> list[dict]:
    """Differences between re-rated and live RatedCdrs of ``period`` (each list in its order)."""
    exp = _occurrences(r for r in expected if r["billing_period"] == period)
    got = _occurrences(r for r in live if r["billing_period"] == period)
    out = []
    for key in sorted(set(exp) | set(got), key=lambda k: (
            (exp.get(k) or got.get(k))["rated_at"], k[0], k[1])):
        e, g = exp.get(key), got.get(key)
        if e is None:
            out.append({"cdr_id": key[0], "occurrence": key[1], "problem": "in bss.cdr.rated, not in the re-rating"})
        elif g is None:
            out.append({"cdr_id": key[0], "occurrence": key[1], "problem": "missing from bss.cdr.rated"})
        else:
            fields = {f: {"live": g.get(f), "audit": e.get(f)} for f in FIELDS if g.get(f) != e.get(f)}
            if fields:
                out.append({"cdr_id": key[0], "occurrence": key[1], "problem": "differs", "fields": fields})
    return out


def report(subscriber_id: str, period: str, expected: list[dict], live: list[dict]) -> dict:
    diffs = diff(expected, live, period)
    return {"subscriber": subscriber_id, "period": period,
            "rerated": sum(1 for r in expected if r["billing_period"] == period),
            "live": sum(1 for r in live if r["billing_period"] == period),
            "differences": diffs, "agree": not diffs}


def format_text(rep: dict) -> str:
    lines = []
    for d in rep["differences"]:
        head = f"{d['cdr_id']}" + (f"#{d['occurrence'] + 1}" if d["occurrence"] else "")
        if d["problem"] == "differs":
            parts = "; ".join(f"{f} live={v['live']!r} audit={v['audit']!r}" for f, v in d["fields"].items())
            lines.append(f"DIFF {head}: {parts}")
        else:
            lines.append(f"DIFF {head}: {d['problem']}")
    verdict = "AGREE" if rep["agree"] else "DISAGREE"
    lines.append(f"{verdict} subscriber={rep['subscriber']} period={rep['period']} rerated={rep['rerated']} "
                 f"live={rep['live']} differences={len(rep['differences'])}")
    return "\n".join(lines)


# -- reading the log ----------------------------------------------------------------------

def read_log(topic: str, key: str | None = None, timeout: float = 60.0) -> list[tuple[int, dict]]:
    """``(offset, event)`` of a whole topic (optionally only records with ``key``), read
    committed, no group, no commits. Undecodable records are skipped."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    from telbus import codec, kafka

    c = kafka.consumer(None, **{"enable.partition.eof": True})
    try:
        md = c.list_topics(topic, timeout=15)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise SystemExit(f"telbus audit: topic {topic!r} does not exist")
        parts = []
        for p in sorted(md.topics[topic].partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if hi > lo:
                parts.append(p)
        out: list[tuple[int, int, dict]] = []
        if not parts:
            return []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        kb = key.encode() if key is not None else None
        while len(done) < len(parts):
            if time.monotonic() > deadline:
                raise SystemExit(f"telbus audit: reading {topic} timed out")
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                if kb is not None and m.key() != kb:
                    continue
                try:
                    ev = codec.decode(m.value())
                except codec.DecodeError:
                    continue
                out.append((m.partition(), m.offset(), ev))
        out.sort(key=lambda x: (x[0], x[1]))
        return [(off, ev) for _, off, ev in out]
    finally:
        c.close()


def main(args) -> int:
    sub, period = args.subscriber, args.period
    if len(period) != 6 or not period.isdigit() or not 1 <= int(period[4:]) <= 12:
        print(f"telbus audit rating: --period must be YYYYMM, got {period!r}", file=sys.stderr)
        return 2
    plans = read_log(PLANS)
    events = read_log(SUBSCRIBER_EVENTS, key=sub)
    cdrs = read_log(CDRS, key=sub)
    live = [ev for _, ev in read_log(RATED, key=sub) if ev.get("subscriber_id") == sub]
    expected = rerate(sub, plans, events, cdrs)
    rep = report(sub, period, expected, live)
    if getattr(args, "format", "text") == "json":
        print(json.dumps(rep, sort_keys=True))
    else:
        print(format_text(rep))
    return 0 if rep["agree"] else 1

