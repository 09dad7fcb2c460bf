"""``telbus``: the operator's and producer's command line (CONTRACT §6).

Core commands live here; each subsystem adds its own from a ``commands`` module of its
package (see ``COMMAND_MODULES``), so the CLI grows without one file knowing everything.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

COMMAND_MODULES = [
    "telbus.stack",
    "telbus.demo_commands",
    "telbus.replay",
    "telbus.audit",
    "telbus.lag",
    "processors.commands",
    "processors.subscriptions.cli",
    "sinks.commands",
]


def _progress_enabled(stream=sys.stderr) -> bool:
    return stream.isatty()


# -- topics ----------------------------------------------------------------------------

def cmd_topics(args) -> int:
    from telbus import kafka
    import topics

    reports = topics.inspect(kafka.admin(), create=(args.action == "apply"))
    bad = False
    for r in reports:
        t = topics.catalog()[r.name]
        line = f"{r.status:8} {r.name:32} partitions={t.partitions:<3} {t.config.get('cleanup.policy', '')}"
        print(line + ("" if not r.details else "  " + "; ".join(r.details)))
        bad |= r.status in ("drift",) or any("failed" in d for d in r.details)
    if args.action == "apply":
        from telbus.kafka import publish_schemas

        n = publish_schemas()
        print(f"published {n} schema versions to {topics.SCHEMAS_TOPIC}")
    return 1 if bad else 0


# -- produce ---------------------------------------------------------------------------

def read_events(lines, topic: str):
    """Parse JSON lines for ``topic``: yields (line_no, event, None) or (line_no, None, reason)."""
    from telbus import jsonform
    import topics

    spec = topics.catalog()[topic]
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = jsonform.parse_line(line, allowed=spec.events)
            topics.key_of(topic, event)
        except (jsonform.InvalidEvent, ValueError) as exc:
            yield no, None, str(exc)
            continue
        yield no, event, None


def cmd_produce(args) -> int:
    from telbus.kafka import Publisher
    import topics

    if args.topic not in topics.catalog() or topics.catalog()[args.topic].kind not in ("input", "output"):
        print(f"telbus produce: unknown topic {args.topic!r}", file=sys.stderr)
        return 2
    stream = sys.stdin if args.file in (None, "-") else open(args.file, encoding="utf-8")
    pub = Publisher()
    bad = 0
    with stream:
        for no, event, reason in read_events(stream, args.topic):
            if reason:
                bad += 1
                print(f"line {no}: {reason}", file=sys.stderr)
            else:
                pub.send(args.topic, event)
    report = pub.flush()
    if pub.fatal:   # credentials, TLS, ACLs: one message that says why, not one per record
        print(f"telbus produce: Kafka refused the records: {pub.fatal}", file=sys.stderr)
    else:
        for f in report.failed:
            print(f"telbus produce: delivery failed: {f}", file=sys.stderr)
    print(json.dumps({"topic": args.topic, "published": report.delivered, "rejected_lines": bad,
                      "failed": len(report.failed)}), file=sys.stderr)
    return 1 if bad or report.failed else 0


# -- consume ---------------------------------------------------------------------------

def record_json(msg, decoded=None, error=None) -> dict:
    from telbus import jsonform

    ts_type, ts = msg.timestamp()
    out = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
           "timestamp": jsonform.format_time(ts) if ts_type else None,
           "key": msg.key().decode("utf-8", "replace") if msg.key() is not None else None}
    if msg.headers():
        out["headers"] = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in msg.headers()}
    if error is not None:
        out["error"] = error
        out["value_hex"] = (msg.value() or b"").hex()
    else:
        out["value"] = jsonform.event_to_json(decoded)
    return out


def assign_all(consumer, topic: str, from_beginning: bool, timeout: float = 15) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    md = consumer.list_topics(topic, timeout=timeout)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise SystemExit(f"telbus: topic {topic!r} does not exist")
    parts = sorted(md.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING if from_beginning else OFFSET_END) for p in parts])
    return len(parts)


def cmd_consume(args) -> int:
    from confluent_kafka import KafkaError

    from telbus import codec, kafka

    c = kafka.consumer(None, **{"enable.partition.eof": False})
    assign_all(c, args.topic, args.from_beginning)
    seen = errors = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or seen < args.max:
            msg = c.poll(0.2)
            if msg is None:
                if args.timeout is not None and time.monotonic() - idle_since >= args.timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"telbus consume: {msg.error()}", file=sys.stderr)
                continue
            idle_since = time.monotonic()
            seen += 1
            try:
                rec = record_json(msg, codec.decode(msg.value()))
            except codec.DecodeError as exc:
                errors += 1
                rec = record_json(msg, error=str(exc))
                print(f"partition {msg.partition()} offset {msg.offset()}: undecodable: {exc}", file=sys.stderr)
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
    return 1 if errors and not args.topic.endswith(".dlq") else 0


# -- status ----------------------------------------------------------------------------

def cmd_status(args) -> int:
    from telbus import stack

    print(json.dumps(stack.status(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telbus", description="telbus event backbone")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("topics", help="apply or list the topic catalog")
    t.add_argument("action", choices=["apply", "list"])
    t.set_defaults(func=cmd_topics)

    pr = sub.add_parser("produce", help="publish JSON lines as Avro events")
    pr.add_argument("topic")
    pr.add_argument("file", nargs="?", help="JSON lines file, or - for stdin (default)")
    pr.set_defaults(func=cmd_produce)

    c = sub.add_parser("consume", help="print a topic's records as JSON lines")
    c.add_argument("topic")
    c.add_argument("--from-beginning", action="store_true")
    c.add_argument("--max", type=int)
    c.add_argument("--timeout", type=float, help="stop after this many idle seconds")
    c.set_defaults(func=cmd_consume)

    s = sub.add_parser("status", help="the running stack as JSON")
    s.set_defaults(func=cmd_status)

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        mod.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except Exception as exc:
        from confluent_kafka import KafkaException

        from telbus.kafka import Refused

        if isinstance(exc, KafkaException):   # unreachable cluster, credentials, ACLs: one line
            print(f"telbus: Kafka error: {exc.args[0].str() if exc.args else exc}", file=sys.stderr)
            return 1
        if isinstance(exc, Refused):
            print(f"telbus: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
