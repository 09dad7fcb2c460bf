"""``telbus demo``: publish the demo workload and show what the backbone made of it.

``make run`` calls ``telbus demo run``: publish once per data directory (a marker keeps a
second ``make run`` from publishing the same events again), wait until the processors have
caught up, then print counts per topic, a few decoded events, and each subsystem's report.
"""
from __future__ import annotations

import json
import sys
import time

from telbus import config

#: Modules with ``report(ctx) -> str | None`` sections for ``telbus demo run``.
REPORT_MODULES = [
    "processors.rating.report",
    "processors.subscriptions.report",
    "processors.fraud.report",
    "processors.alarms.report",
    "sinks.report",
]


def _workload(args):
    from telbus import demo

    return demo.generate(seed=args.seed, subscribers=args.subscribers, cdrs=args.cdrs, fraud=not args.no_fraud)


def publish(events, rate: float | None = None, progress=None) -> dict:
    """Publish ``(topic, key, event)`` tuples, optionally paced at ``rate`` events/s."""
    from telbus.kafka import Publisher

    pub = Publisher()
    start = time.monotonic()
    for i, (topic, key, event) in enumerate(events, 1):
        if rate:
            ahead = i / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)   # pacing a load generator, not waiting on a result
        pub.send(topic, event, key=key)
        if progress and i % 5000 == 0:
            progress(i)
    rep = pub.flush(120)
    if rep.failed:
        raise RuntimeError(f"{len(rep.failed)} demo records not delivered: {rep.failed[:3]}")
    return {"published": rep.delivered, "per_topic": rep.per_topic, "seconds": round(time.monotonic() - start, 2)}


#: Consumer groups of the stack (subscription sync, rating, fraud, alarms intake, sink) whose progress ``run`` waits on.
GROUPS = ("telbus-subscriptions", "telbus-rating", "telbus-fraud", "telbus-alarms-in", "telbus-sink")


def _committed(admin, group: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    try:
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    except Exception:
        return {}
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def pending_inputs() -> int:
    """Input records the stack's groups have not processed yet.

    For each group, every partition of each input topic it has started on counts until its
    committed offset reaches the end (input topics are written without transactions, so that
    is exact). Besides, a partition with data that no processor group (the sink aside) has
    committed at all counts in full: nothing has started on it yet.
    """
    from confluent_kafka import TopicPartition

    import topics
    from telbus import kafka

    admin = kafka.admin()
    committed = {g: _committed(admin, g) for g in GROUPS}
    inputs = {t.name for t in topics.contract_topics("input")}
    c = kafka.consumer(None)
    try:
        md = c.list_topics(timeout=10)
        ends = {(t, p): kafka.watermarks(c, TopicPartition(t, p))[1]
                for t in inputs if t in md.topics for p in md.topics[t].partitions}
        pending = 0
        for g, cm in committed.items():
            started = {t for (t, _p) in cm if t in inputs}
            for (t, p), hi in ends.items():
                if t in started:
                    pending += max(0, hi - cm.get((t, p), 0))
        processors = [cm for g, cm in committed.items() if g != "telbus-sink"]
        for tp, hi in ends.items():
            if hi and not any(tp in cm for cm in processors):
                pending += hi
        return pending
    finally:
        c.close()


def wait_caught_up(timeout: float = 300.0, settle: float = 3.0, log=print) -> bool:
    """Wait until the processors have consumed every input and their outputs stop growing."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        pending = pending_inputs()
        if pending == 0:
            break
        if pending != last:
            log(f"  processors catching up: {pending} input records to go")
            last = pending
        time.sleep(1)
    else:
        return False
    before = end_offset_totals()
    while time.monotonic() < deadline:
        time.sleep(settle)   # outputs (and the sink behind them) settle: re-checked, not assumed
        now = end_offset_totals()
        if now == before:
            return True
        before = now
    return False


def end_offset_totals() -> dict[str, int]:
    """End offsets per contract topic and DLQ (a cheap progress signal; transactional
    topics also count their commit markers here)."""
    from confluent_kafka import TopicPartition

    import topics
    from telbus import kafka

    c = kafka.consumer(None)
    try:
        md = c.list_topics(timeout=10)
        out = {}
        for name, t in topics.catalog().items():
            if name not in md.topics or t.kind == "schemas":
                continue
            out[name] = sum(kafka.watermarks(c, TopicPartition(name, p))[1] for p in md.topics[name].partitions)
        return out
    finally:
        c.close()


def record_counts(names) -> dict[str, int]:
    """Records per topic as a read_committed reader sees them (no commit markers, no
    aborted records)."""
    from confluent_kafka import KafkaError, TopicPartition

    from telbus import kafka

    out = {}
    for name in names:
        c = kafka.consumer(None, **{"enable.partition.eof": True})
        try:
            md = c.list_topics(name, timeout=10)
            parts = [p for p in md.topics[name].partitions if kafka.watermarks(c, TopicPartition(name, p))[1]]
            c.assign([TopicPartition(name, p, 0) for p in parts])
            n, eof = 0, set()
            deadline = time.monotonic() + 60
            while len(eof) < len(parts) and time.monotonic() < deadline:
                for m in c.consume(5000, 0.5):
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            eof.add(m.partition())
                        continue
                    n += 1
            out[name] = n
        finally:
            c.close()
    return out


def sample_records(topic: str, n: int = 2) -> list[dict]:
    """The first ``n`` decodable records of a topic, in the consume JSON form."""
    from confluent_kafka import KafkaError, TopicPartition

    from telbus import codec, kafka
    from telbus.cli import record_json

    c = kafka.consumer(None)
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        out, eof = [], 0
        deadline = time.monotonic() + 10
        while len(out) < n and eof < len(md.topics[topic].partitions) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                eof += msg.error().code() == KafkaError._PARTITION_EOF
                continue
            try:
                out.append(record_json(msg, codec.decode(msg.value())))
            except codec.DecodeError:
                continue
        return out
    finally:
        c.close()


def _reference_prefix(w) -> int:
    """How many leading events of the workload are reference data (no traffic yet)."""
    reference_types = {"TariffPlan", "NetworkElement"}
    n = 0
    for _topic, _key, ev in w.events:
        if ev["event_type"] in reference_types or (
                ev["event_type"] in ("SubscriberCreated", "BalanceRecharged")
                and ev["event_time"] < w.manifest["base_time_ms"]):
            n += 1
            continue
        break
    return n


def cmd_publish(args) -> int:
    marker = config.run_dir() / "demo-published.json"
    if marker.exists() and not args.force:
        print(f"demo workload already published (see {marker}); --force to publish again", file=sys.stderr)
        return 0
    w = _workload(args)
    events = w.events[: args.count] if args.count else w.events
    result = publish(events, args.rate, progress=lambda i: print(f"  published {i}", file=sys.stderr)
                     if sys.stderr.isatty() else None)
    marker.write_text(json.dumps({"result": result, "manifest": w.manifest}, default=str))
    print(json.dumps(result))
    return 0


def cmd_print(args) -> int:
    from telbus import jsonform

    for topic, key, event in _workload(args).events[: args.count or None]:
        sys.stdout.write(json.dumps({"topic": topic, "key": key, "value": jsonform.event_to_json(event)},
                                    ensure_ascii=False) + "\n")
    return 0


def cmd_run(args) -> int:
    import importlib

    marker = config.run_dir() / "demo-published.json"
    print("== telbus demo ==")
    if not marker.exists():
        w = _workload(args)
        t = time.monotonic()
        # Reference data first (plans, topology, subscribers that exist before the window),
        # as in production: traffic arrives for subscribers and NEs already known.
        n_ref = _reference_prefix(w)
        result = publish(w.events[:n_ref])
        if not wait_caught_up(args.wait):
            print(f"warning: reference data not processed after {args.wait:.0f}s")
        rest = publish(w.events[n_ref:])
        result = {"published": result["published"] + rest["published"],
                  "reference": result["published"], "traffic": rest["published"]}
        marker.write_text(json.dumps({"result": result, "manifest": w.manifest}, default=str))
        print(f"published {result['published']} demo events ({result['reference']} reference, "
              f"{result['traffic']} traffic) in {time.monotonic() - t:.1f}s")
    else:
        print("demo workload already published in this data directory (make clean to start over)")
    manifest = json.loads(marker.read_text())["manifest"]
    if not wait_caught_up(args.wait):
        print(f"warning: processors still behind after {args.wait:.0f}s; figures below are partial")
    ends = end_offset_totals()
    counts = record_counts([name for name, n in ends.items() if n])
    counts.update({name: 0 for name, n in ends.items() if not n})
    print("\n-- records per topic --")
    for name, n in counts.items():
        if n or not name.endswith(".dlq"):
            print(f"  {name:32} {n:>9}")
    print("\n-- a few decoded events --")
    for name in ("net.cdr.raw", "bss.cdr.rated", "sec.fraud.alerts", "oss.incidents", "bss.subscription.state"):
        if counts.get(name):
            for rec in sample_records(name, 1):
                print(f"  {name}: {json.dumps(rec['value'], ensure_ascii=False)}")
    ctx = {"manifest": manifest, "counts": counts}
    for mod_name in REPORT_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and mod_name.startswith(exc.name):
                continue
            raise
        text = mod.report(ctx)
        if text:
            print("\n" + text.rstrip())
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the deterministic demo workload")
    dsub = p.add_subparsers(dest="demo_command", required=True)
    for name, func, text in [("publish", cmd_publish, "publish the demo workload (paced with --rate)"),
                             ("print", cmd_print, "print the demo workload as JSON lines"),
                             ("run", cmd_run, "publish once, wait for the processors, show the results")]:
        d = dsub.add_parser(name, help=text)
        d.add_argument("--seed", type=int, default=7)
        d.add_argument("--subscribers", type=int, default=200)
        d.add_argument("--cdrs", type=int, default=5000)
        d.add_argument("--no-fraud", action="store_true", help="a quiet workload: no injected fraud")
        if name == "publish":
            d.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
            d.add_argument("--count", type=int, help="publish only the first N events")
            d.add_argument("--force", action="store_true", help="publish even if already published here")
        if name == "print":
            d.add_argument("--count", type=int)
        if name == "run":
            d.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the processors")
        d.set_defaults(func=func)
