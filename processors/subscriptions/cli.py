"""``telbus export subscriptions --full | --since CURSOR_OR_TIME`` (reader + command).

The reader assigns every partition of the compacted ``bss.subscription.state`` (no consumer
group, nothing committed, read_committed), notes each partition's end offset first and
reads up to it, so one export is a consistent cut of the topic.  The pure part
(:mod:`processors.subscriptions.export`) picks the latest state per subscriber and
formats it.

Rows go to stdout (or ``--output``); the cursor to resume from is printed on stderr as
``{"cursor": "offsets:0=..,1=..", "rows": N, ...}`` and written to ``--cursor-file`` if
given.  ``--since`` takes such a cursor (exact: full@X + since X == a later full export),
or a time (ISO-8601 with offset, or epoch millis) compared with ``updated_at``.
"""
from __future__ import annotations

import json
import sys
import time

from processors.subscriptions import export

TOPIC = "bss.subscription.state"


def read_compacted(topic: str = TOPIC, timeout: float = 60.0):
    """(records, end_offsets): every record below the end offsets noted at the start."""
    from confluent_kafka import KafkaError, TopicPartition

    from telbus import codec, kafka

    c = kafka.consumer(None, **{"enable.partition.eof": True})
    try:
        md = c.list_topics(timeout=15)  # not naming the topic: that could auto-create it
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise SystemExit(f"telbus export: topic {topic!r} does not exist")
        parts = sorted(t.partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        records = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"export: partitions {sorted(todo)} of {topic} not read to their end "
                                   f"within {timeout:.0f}s")
            msg = c.poll(0.5)
            if msg is None:
                continue
            p = msg.partition()
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(p)
                    continue
                raise RuntimeError(f"export: {msg.error()}")
            if msg.offset() >= ends[p]:
                todo.discard(p)
                continue
            value = None if msg.value() is None else codec.decode(msg.value())
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            records.append({"partition": p, "offset": msg.offset(), "key": key, "value": value})
            if msg.offset() + 1 >= ends[p]:
                todo.discard(p)
        return records, ends
    finally:
        c.close()


def run_export(since: str | None, fmt: str = "jsonl", topic: str = TOPIC) -> export.ExportResult:
    cursor = export.parse_since(since) if since is not None else None
    records, ends = read_compacted(topic)
    return export.export_states(records, since=cursor, end_offsets=ends)


def cmd_export(args) -> int:
    if args.what != "subscriptions":
        print(f"telbus export: nothing to export for {args.what!r} (subscriptions)", file=sys.stderr)
        return 2
    try:
        res = run_export(None if args.full else args.since, args.format)
    except export.CursorError as exc:
        print(f"telbus export: {exc}", file=sys.stderr)
        return 2
    text = export.render(res.rows, args.format)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.cursor_file:
        with open(args.cursor_file, "w", encoding="utf-8") as f:
            f.write(res.cursor + "\n")
    summary = {"cursor": res.cursor, "rows": len(res.rows), "mode": "full" if args.full else "since"}
    if res.deleted:
        summary["deleted"] = res.deleted
    print(json.dumps(summary), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export subscriptions (full or incremental) as JSON lines or CSV")
    p.add_argument("what", choices=["subscriptions"])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="latest state of every subscriber")
    mode.add_argument("--since", metavar="CURSOR_OR_TIME",
                      help="changes after a cursor printed by an earlier export (offsets:P=O,...), "
                           "or states with updated_at >= an ISO-8601 time / epoch millis")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", "-o", help="file to write (default stdout)")
    p.add_argument("--cursor-file", help="also write the resume cursor to this file")
    p.set_defaults(func=cmd_export)
