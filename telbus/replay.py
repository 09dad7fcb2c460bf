"""``telbus replay``: read an exact range of a topic, print or republish it, prove what was read.

The consumer is assigned partitions directly (``assign()``): it never joins a consumer
group and never commits, so a replay cannot disturb the offsets of a running processor.
Partitions are read one after the other, partition ascending, offset ascending, so the
output and the digest come out in the same canonical order every time.

Range
    Start per partition: ``--from-offset`` (``P:O``, several comma-separated or repeated,
    or a bare ``O`` / ``earliest`` for every partition) or ``--from-time`` (the first
    offset whose timestamp is >= T, via ``offsets_for_times``).
    End per partition (inclusive): ``--to-offset P:O`` (last offset included) or
    ``--to-time T`` (records before the first offset whose timestamp is > T); without
    either, the partition's end (high watermark) at the moment the replay starts. The
    end is always capped at that high watermark, so a replay never waits for new data.
    Partitions: ``--partition`` if given, else those named in ``P:O`` arguments, else all.
    Reads are ``read_committed``: records of aborted transactions are not part of a range.

Outputs
    Records go to stdout (or ``--out FILE``), one JSON object per line:
    ``--format jsonl`` (default): topic, partition, offset, timestamp, key, headers, and
    ``value`` (the decoded event) — or, for a value that does not decode, ``error`` and
    ``value_hex`` (never skipped).
    ``--format raw``: topic, partition, offset, timestamp (ISO), timestamp_ms,
    ``key_b64`` and ``value_b64`` (standard base64 of the exact bytes, null when absent),
    ``headers`` as a list of ``[name, value_b64]`` pairs in record order.
    The evidence summary is one JSON object on stderr (always, last line), and also
    written to ``--evidence FILE`` when given. The record output never contains it.

Digest (``sha256``, evidence ``digest: "telbus-replay-sha256-v1"``)
    SHA-256 over: the ASCII bytes ``telbus-replay-v1\\n``, then F(topic), then for every
    record in partition-ascending, offset-ascending order:
    ``BE32(partition) BE64(offset) BE64s(timestamp_ms or -1) F(key) F(value)
    BE32(number of headers) [F(header name) F(header value)]...`` where
    ``F(b) = BE32(len(b)) b`` and ``F(None) = FF FF FF FF``; BE = unsigned big-endian,
    BE64s = signed. Every partition also gets its own ``sha256`` over the same framing
    (prefix, topic, then only that partition's records). Two auditors replaying the same
    range of the same topic get the same digests, whatever the output format.

``--into TOPIC`` republishes the range to another existing topic: same key, value bytes,
timestamp and headers, to the same partition number when the target has it (else the
producer's key partitioner). It refuses the source topic itself.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import time
from dataclasses import dataclass, field

DIGEST_NAME = "telbus-replay-sha256-v1"
DIGEST_PREFIX = b"telbus-replay-v1\n"
_NULL = b"\xff\xff\xff\xff"


class ReplayError(Exception):
    """A replay request that cannot be carried out; the message says why."""


# -- canonical record bytes (pure) -------------------------------------------------------

def _field(b: bytes | None) -> bytes:
    if b is None:
        return _NULL
    return struct.pack(">I", len(b)) + b


def digest_prefix(topic: str) -> bytes:
    return DIGEST_PREFIX + _field(topic.encode("utf-8"))


def record_bytes(partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
                 value: bytes | None, headers=None) -> bytes:
    """The bytes one record contributes to the digest (see the module docstring)."""
    hdrs = list(headers or [])
    parts = [struct.pack(">IQq", partition, offset, -1 if timestamp_ms is None else timestamp_ms),
             _field(key), _field(value), struct.pack(">I", len(hdrs))]
    for name, hv in hdrs:
        parts.append(_field(name.encode("utf-8") if isinstance(name, str) else name))
        parts.append(_field(hv))
    return b"".join(parts)


# -- argument parsing (pure) -------------------------------------------------------------

def parse_time_arg(text: str) -> int:
    """ISO-8601 with an offset (``2026-11-20T10:00:00+08:00``, ``...Z``) or epoch ms."""
    from telbus import jsonform

    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        return jsonform.parse_time(t, "time")
    except jsonform.InvalidEvent as exc:
        raise ReplayError(str(exc).replace("time: ", "")) from None


def parse_offsets(values: list[str] | None, what: str) -> tuple[dict[int, int], int | None]:
    """``P:O`` items (comma-separated or repeated) -> ({partition: offset}, offset_for_all).

    A bare ``O`` (or ``earliest``/``beginning`` = 0 for a start) applies to every partition.
    """
    per: dict[int, int] = {}
    every = None
    for v in values or []:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                if item in ("earliest", "beginning"):
                    every = 0
                elif ":" in item:
                    p, o = item.split(":", 1)
                    p, o = int(p), int(o)
                    if p < 0 or o < 0:
                        raise ValueError
                    if p in per:
                        raise ReplayError(f"{what}: partition {p} given twice")
                    per[p] = o
                else:
                    every = int(item)
                    if every < 0:
                        raise ValueError
            except ValueError:
                raise ReplayError(f"{what}: expected P:O (partition:offset) or an offset, got {item!r}") from None
    return per, every


def parse_partitions(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out = set()
    for v in values:
        for item in v.split(","):
            if item.strip():
                try:
                    out.add(int(item))
                except ValueError:
                    raise ReplayError(f"--partition: not a partition number: {item!r}") from None
    return sorted(out)


# -- the replay ------------------------------------------------------------------------

@dataclass
class PartitionRange:
    partition: int
    start: int           # first offset to read
    end: int             # exclusive end
    low: int             # low watermark when the replay started
    high: int            # high watermark when the replay started
    requested_start: int | None = None
    records: int = 0
    first: int | None = None
    last: int | None = None
    complete: bool = False
    sha: object = None

    def evidence(self) -> dict:
        out = {"partition": self.partition, "from_offset": self.start, "end_offset_exclusive": self.end,
               "first_offset": self.first, "last_offset": self.last, "records": self.records,
               "sha256": self.sha.hexdigest() if self.sha is not None else None,
               "complete": self.complete, "watermarks_at_start": [self.low, self.high]}
        if self.requested_start is not None and self.requested_start < self.low:
            out["note"] = (f"requested offset {self.requested_start} is below the low watermark {self.low}: "
                           "earlier records are gone (retention/compaction)")
        return out


@dataclass
class Plan:
    topic: str
    ranges: list[PartitionRange] = field(default_factory=list)
    all_sha: object = None     # running digest over every partition, in reading order

    def __post_init__(self):
        self.all_sha = hashlib.sha256(digest_prefix(self.topic))


def plan_ranges(consumer, topic: str, partitions=None, from_offsets=None, from_all=None,
                from_time=None, to_offsets=None, to_all=None, to_time=None, timeout: float = 15) -> Plan:
    """Resolve the arguments into concrete [start, end) offsets per partition."""
    from confluent_kafka import TopicPartition

    md = consumer.list_topics(topic, timeout=timeout)
    if topic not in md.topics or md.topics[topic].error is not None:
        raise ReplayError(f"topic {topic!r} does not exist")
    existing = sorted(md.topics[topic].partitions)
    from_offsets, to_offsets = from_offsets or {}, to_offsets or {}
    if partitions is None:
        named = set(from_offsets) | set(to_offsets)
        partitions = sorted(named) if named and from_all is None and from_time is None else existing
    missing = [p for p in set(partitions) | set(from_offsets) | set(to_offsets) if p not in existing]
    if missing:
        raise ReplayError(f"topic {topic!r} has partitions {existing[0]}..{existing[-1]}; no partition {sorted(missing)}")

    plan = Plan(topic)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    marks = {}
    for p in partitions:
        marks[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
    if from_time is not None:
        res = consumer.offsets_for_times([TopicPartition(topic, p, from_time) for p in partitions], timeout=timeout)
        for tp in res:
            starts[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
    else:
        for p in partitions:
            if p in from_offsets:
                starts[p] = from_offsets[p]
            elif from_all is not None:
                starts[p] = from_all
            else:
                raise ReplayError(f"no start offset for partition {p}: give --from-offset {p}:O, a bare offset, "
                                  "or --from-time")
    if to_time is not None:
        res = consumer.offsets_for_times([TopicPartition(topic, p, to_time + 1) for p in partitions], timeout=timeout)
        for tp in res:
            ends[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
    else:
        for p in partitions:
            if p in to_offsets:
                ends[p] = to_offsets[p] + 1
            elif to_all is not None:
                ends[p] = to_all + 1
            else:
                ends[p] = marks[p][1]
    for p in sorted(partitions):
        low, high = marks[p]
        requested = starts[p]
        start = min(max(requested, low), high)
        end = max(min(ends[p], high), start)
        plan.ranges.append(PartitionRange(p, start, end, low, high, requested_start=requested))
    return plan


def _read_partition(consumer, plan: Plan, rng: PartitionRange, idle_timeout: float, on_record, progress=None,
                    done_before: int = 0, total: int | None = None) -> None:
    from confluent_kafka import KafkaError, TopicPartition

    topic = plan.topic
    rng.sha = hashlib.sha256(digest_prefix(topic))
    if rng.start >= rng.end:
        rng.complete = True
        return
    consumer.assign([TopicPartition(topic, rng.partition, rng.start)])
    last_progress = time.monotonic()
    try:
        while True:
            msg = consumer.poll(0.2)
            if msg is None:
                if time.monotonic() - last_progress > idle_timeout:
                    return  # incomplete: reported in the evidence
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    # End of what is readable. At or past our end, whatever offsets remain in
                    # the range are transaction markers or aborted records. Below it, a
                    # transaction is still open (read_committed stops at the last stable
                    # offset): keep waiting, bounded by the idle timeout.
                    if msg.offset() >= rng.end:
                        rng.complete = True
                        return
                    continue
                raise ReplayError(f"partition {rng.partition}: {msg.error()}")
            last_progress = time.monotonic()
            off = msg.offset()
            if off >= rng.end:
                rng.complete = True
                return
            ts_type, ts = msg.timestamp()
            rb = record_bytes(rng.partition, off, ts if ts_type else None, msg.key(), msg.value(), msg.headers())
            rng.sha.update(rb)
            plan.all_sha.update(rb)
            rng.records += 1
            rng.first = off if rng.first is None else rng.first
            rng.last = off
            on_record(msg)
            if progress is not None:
                progress.update(done_before + rng.records, total, f"partition {rng.partition} offset {off}")
            if off + 1 >= rng.end:
                rng.complete = True
                return
    finally:
        consumer.unassign()


def run(args, out=None, err=None) -> int:
    from telbus import codec, kafka
    from telbus.cli import record_json
    from telbus.progress import Progress

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.into is not None and args.into == args.topic:
            raise ReplayError(f"--into {args.into}: refusing to republish a topic into itself")
        from_offsets, from_all = parse_offsets(args.from_offset, "--from-offset")
        to_offsets, to_all = parse_offsets(args.to_offset, "--to-offset")
        from_time = parse_time_arg(args.from_time) if args.from_time else None
        to_time = parse_time_arg(args.to_time) if args.to_time else None
        partitions = parse_partitions(args.partition)
        consumer = kafka.consumer(None, **{"enable.partition.eof": True, "auto.offset.reset": "error"})
        try:
            plan = plan_ranges(consumer, args.topic, partitions, from_offsets, from_all, from_time,
                               to_offsets, to_all, to_time)
            target_parts = None
            producer = None
            delivery = {"delivered": 0, "failed": []}
            if args.into is not None:
                md = consumer.list_topics(args.into, timeout=15)
                if args.into not in md.topics or md.topics[args.into].error is not None:
                    raise ReplayError(f"--into {args.into}: topic does not exist (create it first)")
                target_parts = set(md.topics[args.into].partitions)
                producer = kafka.producer()

            def on_delivery(e, m):
                if e is not None:
                    delivery["failed"].append(f"{m.partition()}: {e}")
                else:
                    delivery["delivered"] += 1

            sink = open(args.out, "w", encoding="utf-8") if args.out else out
            undecodable = 0

            def on_record(msg):
                nonlocal undecodable
                if args.format == "raw":
                    rec = raw_json(msg)
                else:
                    try:
                        rec = record_json(msg, codec.decode(msg.value()))
                    except codec.DecodeError as exc:
                        undecodable += 1
                        rec = record_json(msg, error=str(exc))
                if sink is not None and not args.quiet:
                    sink.write(json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n")
                if producer is not None:
                    ts_type, ts = msg.timestamp()
                    kw = {"partition": msg.partition()} if msg.partition() in target_parts else {}
                    if ts_type:
                        kw["timestamp"] = ts
                    while True:
                        try:
                            producer.produce(args.into, msg.value(), msg.key(), headers=msg.headers() or None,
                                             on_delivery=on_delivery, **kw)
                            break
                        except BufferError:
                            producer.poll(0.05)
                    producer.poll(0)

            total = sum(r.end - r.start for r in plan.ranges)
            done = 0
            try:
                with Progress(f"replay {args.topic}", stream=err) as prog:
                    for rng in plan.ranges:
                        _read_partition(consumer, plan, rng, args.timeout, on_record, prog, done, total)
                        done += rng.records
            finally:
                if args.out:
                    sink.close()
            if producer is not None:
                left = producer.flush(60)
                if left:
                    delivery["failed"].append(f"{left} record(s) not delivered within 60s")
        finally:
            consumer.close()
    except ReplayError as exc:
        print(f"telbus replay: {exc}", file=err)
        return 2

    evidence = build_evidence(plan, args, undecodable)
    if producer is not None:
        evidence["into"] = {"topic": args.into, "produced": delivery["delivered"], "failed": delivery["failed"],
                            "same_partition": all(r.partition in target_parts for r in plan.ranges)}
    line = json.dumps(evidence, sort_keys=True)
    if args.evidence:
        with open(args.evidence, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    print(line, file=err)
    if not evidence["complete"]:
        print("telbus replay: range not fully read within the idle timeout (see evidence)", file=err)
        return 3
    if producer is not None and delivery["failed"]:
        return 1
    return 0


def build_evidence(plan: Plan, args, undecodable: int) -> dict:
    return {
        "evidence": "telbus-replay",
        "digest": DIGEST_NAME,
        "topic": plan.topic,
        "format": args.format,
        "partitions": [r.evidence() for r in plan.ranges],
        "records": sum(r.records for r in plan.ranges),
        "undecodable": undecodable if args.format == "jsonl" else None,
        "sha256": plan.all_sha.hexdigest(),
        "complete": all(r.complete for r in plan.ranges),
    }


def raw_json(msg) -> dict:
    from telbus import jsonform

    ts_type, ts = msg.timestamp()

    def b64(b):
        return None if b is None else base64.b64encode(b).decode("ascii")

    return {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "timestamp": jsonform.format_time(ts) if ts_type else None,
            "timestamp_ms": ts if ts_type else None,
            "key_b64": b64(msg.key()), "value_b64": b64(msg.value()),
            "headers": [[k, b64(v)] for k, v in (msg.headers() or [])]}


def register(sub) -> None:
    p = sub.add_parser(
        "replay", help="read (or republish) an exact range of a topic, with a SHA-256 evidence summary",
        description="Read a range of TOPIC without joining a consumer group or committing. Records go to "
                    "stdout or --out as JSON lines; a one-line JSON evidence summary (range per partition, "
                    "record count, SHA-256 over the raw records in partition/offset order) goes to stderr "
                    "and to --evidence FILE. Times: ISO-8601 with offset or epoch milliseconds.")
    p.add_argument("topic")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offset", action="append", metavar="P:O",
                       help="start offset per partition (repeatable or comma-separated); a bare O or "
                            "'earliest' applies to every partition")
    start.add_argument("--from-time", metavar="T", help="start at the first record with timestamp >= T")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--to-offset", action="append", metavar="P:O",
                     help="last offset included, per partition (default: the partition end at start)")
    end.add_argument("--to-time", metavar="T", help="stop before the first record with timestamp > T")
    p.add_argument("--partition", action="append", metavar="P", help="only these partitions (repeatable)")
    p.add_argument("--out", metavar="FILE", help="write records here instead of stdout")
    p.add_argument("--evidence", metavar="FILE", help="also write the evidence JSON here")
    p.add_argument("--format", choices=["jsonl", "raw"], default="jsonl",
                   help="jsonl: decoded events (undecodable ones with 'error'); raw: key/value/headers "
                        "as base64 of the exact bytes")
    p.add_argument("--into", metavar="TOPIC",
                   help="republish the range into TOPIC (keys, timestamps, headers preserved)")
    p.add_argument("--quiet", action="store_true", help="no record output (evidence only)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="give up when no record arrives for this many seconds (default 30)")
    p.set_defaults(func=run)

    # `telbus ops ...` (lag, lag-exporter, prometheus-targets) lives in telbus.lag; until that
    # module is listed in telbus.cli.COMMAND_MODULES it is registered from here.
    from telbus import cli

    if "telbus.lag" not in cli.COMMAND_MODULES:
        from telbus import lag

        lag.register(sub)
