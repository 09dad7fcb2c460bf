"""The soak's offered load: the demo's event mix over a long event-time span, paced.

A soak only says something about memory if the processors' state can reach its steady
size while it runs. Rating keeps a 72-hour duplicate window per subscriber (pruned by
event time), fraud and alarms keep windows too; with event time moving at wall-clock pace
all of them would only grow for 20 minutes. So the stream spans ``hours`` of event time
(30 days by default) over the CDRs planned for the run: the 72-hour windows are full
after a tenth of them, and from then on entries leave as fast as they arrive. A run
offered less than planned covers proportionally fewer days (``soak.json`` reports how
many); the warm-up half must still cover 72 hours for the verdict to mean anything.

The mix is the demo workload generated over the same span (logins, orders and work
orders, recharges, plan and status changes, alarm storms and flapping links, no injected
fraud), merged in event-time order with ``demo.cdr_stream``'s CDRs of the same
subscribers. Both are lazy or small: the generator's own memory stays flat too.
"""
from __future__ import annotations

import heapq
import threading
import time

from telbus import demo

SEED = 7


def reference(subscribers: int, hours: int) -> list:
    """Plans, topology and existing subscribers: published before any traffic."""
    return demo.reference_events(SEED, subscribers, hours=hours)


def traffic(subscribers: int, cdrs: int, hours: int):
    """(topic, key, event) in event-time order: CDRs plus the demo's other inputs."""
    days = max(1, hours // 24)
    w = demo.generate(SEED, subscribers, 0, fraud=False, hours=hours,
                      storms=max(2, min(6, days // 3)), flaps=max(1, min(3, days // 5)))
    n_ref = len(reference(subscribers, hours))
    others = w.events[n_ref:]
    stream = demo.cdr_stream(SEED, cdrs, subscribers, hours=hours)
    return heapq.merge(others, stream, key=lambda e: e[2]["event_time"])


class Load(threading.Thread):
    """Publishes ``events`` at ``rate`` CDRs per second (other events ride along in their
    event-time place); ``rate=None`` publishes as fast as the producer goes."""

    def __init__(self, events, rate: float | None = None, limit_cdrs: int | None = None):
        super().__init__(daemon=True, name="soak-load")
        from telbus.kafka import Publisher

        self.events = events
        self.rate = rate
        self.limit_cdrs = limit_cdrs
        self.pub = Publisher()
        self.sent = 0
        self.cdrs = 0
        self.last_event_time = 0
        self.exhausted = False
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        start, base = time.monotonic(), self.cdrs
        for topic, key, ev in self.events:
            if self._halt.is_set():
                break
            self.pub.send(topic, ev, key=key)
            self.sent += 1
            self.last_event_time = ev["event_time"]
            if topic != demo.T_CDR:
                continue
            self.cdrs += 1
            if self.limit_cdrs is not None and self.cdrs >= self.limit_cdrs:
                break
            if self.rate:
                ahead = (self.cdrs - base) / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    self._halt.wait(ahead)   # pacing the offered load
            if self.pub.fatal:
                break
        else:
            self.exhausted = True
        rep = self.pub.flush(120)
        if rep.failed:
            self.error = f"{len(rep.failed)} soak records not delivered: {rep.failed[:3]}"

    def stop(self) -> None:
        self._halt.set()
        self.join(180)
