"""Alarm correlation section of ``telbus demo run``: what oss.incidents made of the raw
alarms, checked against the demo manifest's storms and flapping links."""
from __future__ import annotations

from collections import Counter

INCIDENTS = "oss.incidents"


def read_all(topic: str, timeout: float = 30.0) -> list[tuple[int, int, dict]]:
    """Every record of ``topic`` (read_committed) as (partition, offset, decoded value)."""
    import time

    from confluent_kafka import KafkaError, TopicPartition

    from telbus import codec, kafka

    c = kafka.consumer(None, **{"enable.partition.eof": True, "isolation.level": "read_committed"})
    out = []
    try:
        md = c.list_topics(topic, timeout=10)
        parts = []
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                parts.append(p)
        if not parts:
            return out
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
                continue
            try:
                out.append((m.partition(), m.offset(), codec.decode(m.value())))
            except codec.DecodeError:
                continue
        return out
    finally:
        c.close()


def summarize(events: list[dict], manifest: dict | None) -> list[str]:
    """Report lines for IncidentEvents in publication order (pure: unit-testable)."""
    last: dict[str, dict] = {}
    changes = Counter()
    for e in events:
        last[e["incident_id"]] = e
        changes[e["change"]] += 1
    final = Counter(e["change"] for e in last.values())
    open_now = sum(1 for e in last.values() if e["change"] in ("OPENED", "UPDATED"))
    lines = [
        f"  incident events: {sum(changes.values())}  "
        + "  ".join(f"{k}={changes[k]}" for k in ("OPENED", "UPDATED", "MERGED", "CLEARED")),
        f"  incidents: {len(last)} ({final['MERGED']} merged into a root cause, "
        f"{final['CLEARED']} cleared, {open_now} open, "
        f"{sum(1 for e in last.values() if e['flapping'])} flapping, "
        f"{sum(1 for e in last.values() if not e.get('root_ne_known', True))} on unknown NEs)",
    ]
    manifest = manifest or {}
    for storm in manifest.get("storms", []):
        mine = [e for e in last.values() if e["root_alarm_id"] == storm["root_alarm_id"]]
        if not mine:
            lines.append(f"  storm {storm['root_ne_id']}: no incident rooted at {storm['root_alarm_id']}: MISMATCH")
            continue
        inc = mine[0]
        ok = set(storm["symptom_alarm_ids"]) <= set(inc["alarm_ids"])
        subs = f"{inc['affected_subscribers']} subscribers affected"
        if inc["affected_subscribers"] != storm["affected_subscribers"]:
            # the manifest counts every subscriber ever placed there, including those
            # created after the storm; the incident counts those placed at the time
            subs += f" (manifest, counting later sign-ups too: {storm['affected_subscribers']})"
        lines.append(
            f"  storm {storm['root_ne_id']}: {inc['incident_id']} {inc['change']}, "
            f"{len(inc['alarm_ids'])} alarms (root + {len(storm['symptom_alarm_ids'])} symptoms expected), "
            f"{subs}: {'match' if ok else 'MISMATCH'}")
    for flap in manifest.get("flapping", []):
        flagged = any(e["flapping"] for e in last.values() if e["root_ne_id"] == flap["ne_id"])
        lines.append(f"  flapping {flap['ne_id']} {flap['probable_cause']} ({flap['transitions']} transitions): "
                     f"{'flagged' if flagged else 'NOT flagged: MISMATCH'}")
    return lines


def report(ctx) -> str | None:
    counts = ctx.get("counts", {})
    raw = counts.get("oss.alarm.raw", 0)
    if not raw:
        return None
    lines = ["-- alarm correlation --"]
    try:
        recs = read_all(INCIDENTS)
    except Exception as exc:  # the report must not break the demo output
        return "\n".join(lines + [f"  ({INCIDENTS} unreadable: {exc})"])
    events = [v for _p, _o, v in sorted(recs, key=lambda r: (r[0], r[1]))]
    incidents = len({e["incident_id"] for e in events})
    ratio = f", {raw / incidents:.1f} raw alarms per incident" if incidents else ""
    lines.append(f"  raw alarms: {raw} -> {incidents} incidents{ratio}")
    lines.extend(summarize(events, ctx.get("manifest")))
    lines.append(f"  dead letters (oss.alarm.raw / oss.topology): "
                 f"{counts.get('oss.alarm.raw.dlq', 0)} / {counts.get('oss.topology.dlq', 0)}")
    return "\n".join(lines)
