"""R3: ``telbus worker`` itself on the CDR stream, at-least-once and exactly-once.

Throughput: the worker starts on a backlog of N CDRs with a fresh application id (fresh
state and offsets) and is timed from ready to the N-th RatedCdr visible to a
read_committed consumer. Latency: with the backlog drained, CDRs are produced at 70% of
that throughput and each is timed from its produce call to its RatedCdr being visible.
"""
from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import OFFSET_END, TopicPartition

from bench.common import cpu_seconds_pid, percentiles
from telbus import codec, config, kafka

OUT_TOPIC = "bss.cdr.rated"


def wait_rated(watcher, target: int, procs, label: str, log=print, poll_s: float = 0.2,
               timeout_s: float = 3600) -> None:
    """Until ``watcher`` has seen ``target`` RatedCdrs (or the deadline); fail at once if a
    worker process dies; a progress line every 30 s."""
    t0 = last_log = time.monotonic()
    while watcher.count < target and time.monotonic() < t0 + timeout_s:
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} died:\n{p.log_tail()}")
        time.sleep(poll_s)
        if time.monotonic() - last_log > 30:
            log(f"    {label}: {watcher.count}/{target} rated")
            last_log = time.monotonic()


class RatedWatcher(threading.Thread):
    """Counts RatedCdr records appearing from now on and when each cdr_id became visible."""

    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.seen_at: dict[str, float] = {}
        self.track = False
        self._halt = threading.Event()
        self.c = kafka.consumer(f"bench-watch-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": False})
        md = self.c.list_topics(OUT_TOPIC, timeout=10)
        self.c.assign([TopicPartition(OUT_TOPIC, p, OFFSET_END) for p in md.topics[OUT_TOPIC].partitions])
        self.ready = threading.Event()

    def run(self):
        while not self._halt.is_set():
            msgs = self.c.consume(1000, 0.2)
            self.ready.set()
            now = time.monotonic()
            for m in msgs:
                if m.error():
                    continue
                self.count += 1
                if self.track:
                    try:
                        self.seen_at.setdefault(codec.decode(m.value())["cdr_id"], now)
                    except codec.DecodeError:
                        pass
        self.c.close()

    def stop(self):
        self._halt.set()
        self.join(10)


def run_worker_bench(guarantee: str, backlog: int, latency_seconds: float, make_cdrs, log=print) -> dict:
    from tests.helpers import Proc

    watcher = RatedWatcher()
    watcher.start()
    watcher.ready.wait(30)
    app_id = f"bench-{guarantee}-{uuid.uuid4().hex[:6]}"
    # a group and state topic of its own: fresh offsets and state for each measured run
    env = {"TELBUS_WORKER_APP_ID": app_id,
           "TELBUS_RATING_GROUP": f"{app_id}-rating", "TELBUS_RATING_STATE_TOPIC": f"{app_id}-rating-state",
           "TELBUS_WORKER_AGENTS": "rating", "TELBUS_WORKER_ID": app_id, "TELBUS_WORKER_WEB_PORT": "0"}
    proc = Proc(f"bench-worker-{guarantee}", ["worker", "--loglevel", "warning"], env,
                log_dir=config.data_dir() / "logs")
    proc.start(ready_timeout=300)
    t0, cpu0 = time.monotonic(), cpu_seconds_pid(proc.pid)
    wait_rated(watcher, backlog, [proc], guarantee, log, poll_s=0.5)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds_pid(proc.pid) - cpu0
    done = watcher.count
    throughput = done / elapsed
    result = {"guarantee": guarantee, "records": done, "seconds": round(elapsed, 1),
              "throughput_per_s": round(throughput), "cpu_us_per_record": round(cpu / max(done, 1) * 1e6, 1)}
    # Latency at 70% of the sustained maximum.
    rate = max(1.0, 0.7 * throughput)
    n = int(rate * latency_seconds)
    cdrs = make_cdrs(n)
    watcher.track = True
    sent_at: dict[str, float] = {}
    p = kafka.producer(**{"linger.ms": 1})
    start = time.monotonic()
    for i, (topic, key, ev) in enumerate(cdrs):
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load
        sent_at[ev["cdr_id"]] = time.monotonic()
        p.produce(topic, codec.encode(ev), key)
        p.poll(0)
    p.flush(60)
    wait_end = time.monotonic() + 120
    while len([c for c in sent_at if c in watcher.seen_at]) < len(sent_at) and time.monotonic() < wait_end:
        time.sleep(0.2)
    lat = [watcher.seen_at[c] - s for c, s in sent_at.items() if c in watcher.seen_at]
    result["latency_at_70pct"] = {"offered_rate_per_s": round(rate), "records": n,
                                  "seen": len(lat), "seconds": percentiles(lat)}
    proc.stop()
    watcher.stop()
    return result
