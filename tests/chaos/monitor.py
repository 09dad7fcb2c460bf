"""Samples of how far behind the stack is, twice a second, for the per-case figures.

Two signals, each on a thread of its own so that a paused broker (whose calls hang until
their timeout) cannot stop the other from being sampled:

* rating backlog = CDRs sent - distinct CDRs seen rated (by the watcher): what a customer
  of the money path waits for, including records queued in the producer while the broker
  is away;
* sink lag = the sink group's committed offsets behind the end of every contract topic
  (``telbus.lag``, which only reads offsets and never joins the group); ``None`` while the
  broker does not answer.
"""
from __future__ import annotations

import threading
import time


class Monitor:
    def __init__(self, load, watcher, sink_group: str = "telbus-sink"):
        self.load, self.watcher, self.sink_group = load, watcher, sink_group
        self.backlog: list[tuple[float, int]] = []
        self.sink_lag: list[tuple[float, int | None]] = []
        self.sink_lag_topics: list[tuple[float, dict]] = []     # per topic, when not 0
        self._quit = threading.Event()
        self._threads = [threading.Thread(target=self._rating, daemon=True, name="chaos-mon-rating"),
                         threading.Thread(target=self._sink, daemon=True, name="chaos-mon-sink")]

    def start(self) -> "Monitor":
        for t in self._threads:
            t.start()
        return self

    def quit(self) -> None:
        self._quit.set()

    def _rating(self) -> None:
        while not self._quit.is_set():
            self.backlog.append((time.monotonic(), self.load.sent_cdrs() - len(self.watcher.first_seen)))
            self._quit.wait(0.5)

    def _sink(self) -> None:
        from sinks.ddl import contract_topics
        from telbus import kafka, lag

        names = list(contract_topics())
        consumer = None
        while not self._quit.is_set():
            try:
                if consumer is None:
                    consumer = kafka.consumer(self.sink_group, **{"enable.partition.eof": False})
                res = lag.compute(self.sink_group, names, consumer=consumer, timeout=3)
                now = time.monotonic()
                self.sink_lag.append((now, sum(r["lag"] for r in res.values())))
                by_topic: dict = {}
                for (topic, _p), r in res.items():
                    by_topic[topic] = by_topic.get(topic, 0) + r["lag"]
                self.sink_lag_topics.append((now, {t: n for t, n in by_topic.items() if n}))
            except Exception:
                self.sink_lag.append((time.monotonic(), None))
                if consumer is not None:
                    consumer.close()
                consumer = None
            self._quit.wait(0.5)
        if consumer is not None:
            consumer.close()


def between(samples, t0: float, t1: float):
    return [(t, v) for t, v in samples if t0 <= t <= t1]


def recovered_at(samples, fault_start: float, until: float, threshold: int) -> float | None:
    """When the signal went back under ``threshold`` for good: the first sample after the
    last one above it (or unknown: the broker did not answer) in [fault_start, until].
    ``fault_start`` itself when it never went above; None when it is still above."""
    window = between(samples, fault_start, until)
    if not window:
        return None
    bad = [i for i, (_t, v) in enumerate(window) if v is None or v > threshold]
    if not bad:
        return fault_start
    if bad[-1] == len(window) - 1:
        return None
    return window[bad[-1] + 1][0]


def peak(samples, t0: float, t1: float) -> int | None:
    vals = [v for _t, v in between(samples, t0, t1) if v is not None]
    return max(vals) if vals else None


def peak_topics(samples, t0: float, t1: float) -> dict:
    """Per-topic lag at the sample where the total was highest (where the lag sat)."""
    window = [(sum(d.values()), d) for t, d in samples if t0 <= t <= t1]
    return max(window, key=lambda x: x[0])[1] if window else {}
