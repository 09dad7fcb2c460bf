"""Consumer lag: how far a consumer group is behind the end of each partition it reads.

lag = high watermark - the group's committed offset (when the group has committed nothing
for a partition yet: high watermark - low watermark, i.e. everything still retained).
The collector only *reads* the group's committed offsets (OffsetFetch): it never joins the
group, never commits, and so never triggers a rebalance of the processors it watches.

It sets ``telbus_consumer_lag_records{group,topic,partition}`` and
``telbus_topic_end_offset{topic,partition}`` in the calling process, so the numbers are
served by that process's metrics endpoint. Usage in a long-running process::

    from telbus import lag
    collector = lag.start("telbus-rating", ["net.cdr.raw", "bss.subscriber.events"])
    ...
    collector.stop()

On transactional input topics a fully caught-up group can show a lag of 1 per partition
(the commit marker occupies an offset after the last record).

Commands (``telbus ops ...`` once ``telbus.lag`` is in COMMAND_MODULES; until then
``python -m telbus.lag ...``): ``lag GROUP TOPIC...`` prints the lag once as JSON;
``lag-exporter --group G [--topic T]...`` is a standalone process serving the lag metrics of
groups whose processes do not collect it themselves; ``prometheus-targets [FILE]`` writes
the Prometheus file_sd targets of the running stack (see ops/README-operating.md).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

from telbus import config, metrics

log = logging.getLogger("telbus.lag")


def compute(group: str, topics: list[str], consumer=None, timeout: float = 10.0) -> dict[tuple[str, int], dict]:
    """{(topic, partition): {"committed", "low", "high", "lag"}} for ``group`` on ``topics``."""
    from confluent_kafka import TopicPartition

    from telbus import kafka

    own = consumer is None
    c = consumer or kafka.consumer(group, **{"enable.partition.eof": False})
    try:
        tps = []
        for topic in topics:
            md = c.list_topics(topic, timeout=timeout)
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                continue
            tps += [TopicPartition(topic, p) for p in sorted(t.partitions)]
        if not tps:
            return {}
        committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=timeout)}
        out = {}
        for tp in tps:
            low, high = c.get_watermark_offsets(tp, timeout=timeout, cached=False)
            com = committed.get((tp.topic, tp.partition), -1)
            base = com if com >= 0 else low
            out[(tp.topic, tp.partition)] = {"committed": com if com >= 0 else None, "low": low, "high": high,
                                             "lag": max(high - base, 0)}
        return out
    finally:
        if own:
            c.close()


def publish(group: str, result: dict[tuple[str, int], dict]) -> None:
    for (topic, p), r in result.items():
        metrics.CONSUMER_LAG.labels(group, topic, str(p)).set(r["lag"])
        metrics.TOPIC_END_OFFSET.labels(topic, str(p)).set(r["high"])


class LagCollector:
    """A daemon thread that refreshes the lag gauges every ``interval`` seconds."""

    def __init__(self, group: str, topics: list[str], interval: float = 15.0):
        self.group, self.topics, self.interval = group, list(topics), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"telbus-lag-{group}", daemon=True)
        self._consumer = None

    def collect_once(self) -> dict:
        from telbus import kafka

        if self._consumer is None:
            self._consumer = kafka.consumer(self.group, **{"enable.partition.eof": False})
        try:
            result = compute(self.group, self.topics, consumer=self._consumer)
        except Exception:
            metrics.LAG_COLLECTIONS.labels(self.group, "error").inc()
            raise
        publish(self.group, result)
        metrics.LAG_COLLECTIONS.labels(self.group, "ok").inc()
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect_once()
            except Exception as exc:  # the broker may be briefly away: keep trying
                log.warning("lag collection for %s failed: %s", self.group, exc)
            self._stop.wait(self.interval)
        if self._consumer is not None:
            self._consumer.close()

    def start(self) -> "LagCollector":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def start(group: str, topics: list[str], interval: float | None = None) -> LagCollector:
    """Start collecting lag for ``group`` in this process (interval: TELBUS_LAG_INTERVAL_S, 15 s)."""
    if interval is None:
        interval = float(config.env("TELBUS_LAG_INTERVAL_S", "15"))
    return LagCollector(group, topics, interval).start()


# -- Prometheus targets ------------------------------------------------------------------

def prometheus_targets() -> list[dict]:
    """file_sd entries for every live metrics endpoint of the stack (as ``telbus status`` sees it)."""
    from urllib.parse import urlparse

    from telbus import stack

    out = []
    for proc in stack.status()["processes"]:
        url = proc.get("endpoints", {}).get("metrics")
        if not url or not proc.get("alive"):
            continue
        u = urlparse(url)
        out.append({"targets": [u.netloc], "labels": {"telbus_process": proc["name"],
                                                      "__metrics_path__": u.path or "/metrics"}})
    return sorted(out, key=lambda e: e["labels"]["telbus_process"])


def write_targets(path: Path) -> list[dict]:
    targets = prometheus_targets()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(targets, indent=2) + "\n")
    tmp.replace(path)  # atomic: Prometheus never reads a half-written file
    return targets


def default_targets_file() -> Path:
    return config.data_dir() / "prometheus" / "targets" / "telbus.json"


def cmd_targets(args) -> int:
    path = Path(args.file) if args.file else default_targets_file()
    targets = write_targets(path)
    print(json.dumps({"file": str(path), "targets": [t["targets"][0] for t in targets]}))
    return 0


def cmd_lag(args) -> int:
    result = compute(args.group, args.topics)
    rows = [{"topic": t, "partition": p, **r} for (t, p), r in sorted(result.items())]
    print(json.dumps({"group": args.group, "total_lag": sum(r["lag"] for r in rows), "partitions": rows}))
    return 0


def cmd_exporter(args) -> int:
    """A standalone lag exporter: serves the lag of the given groups until SIGTERM/SIGINT."""
    import signal

    import topics as catalog
    from telbus import stack

    process = config.env("TELBUS_PROCESS_NAME", "lag-exporter")
    names = args.topics or [t.name for t in catalog.contract_topics("input")]
    metrics.serve(process)
    collectors = [LagCollector(g, names, args.interval) for g in args.group]
    for c in collectors:
        try:
            c.collect_once()
        except Exception as exc:
            log.warning("first lag collection for %s failed: %s", c.group, exc)
        c.start()
    stack.mark_ready(process)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    for c in collectors:
        c.stop()
    return 0


def register(sub) -> None:
    """``telbus ops lag|lag-exporter|prometheus-targets``."""
    p = sub.add_parser("ops", help="operations helpers (consumer lag, Prometheus targets)")
    osub = p.add_subparsers(dest="ops_command", required=True)
    lg = osub.add_parser("lag", help="a consumer group's lag per partition, as JSON")
    lg.add_argument("group")
    lg.add_argument("topics", nargs="+")
    lg.set_defaults(func=cmd_lag)
    ex = osub.add_parser("lag-exporter", help="serve consumer lag metrics for groups (runs until stopped)")
    ex.add_argument("--group", action="append", required=True, help="consumer group (repeatable)")
    ex.add_argument("--topic", dest="topics", action="append", help="topics (default: every input topic)")
    ex.add_argument("--interval", type=float, default=float(config.env("TELBUS_LAG_INTERVAL_S", "15")))
    ex.set_defaults(func=cmd_exporter)
    tg = osub.add_parser("prometheus-targets",
                         help="write the Prometheus file_sd targets of the running stack")
    tg.add_argument("file", nargs="?", help=f"default: $TELBUS_DATA_DIR/prometheus/targets/telbus.json")
    tg.set_defaults(func=cmd_targets)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m telbus.lag")
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = parser.parse_args(["ops", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
