"""The steady demo load, and the watcher that times every rated CDR.

The load is paced at a fixed rate whatever the stack does: a fault shows up as a backlog
and as delay, not as a load that politely waits. Every record's id and send time is kept,
so the accounting can ask about each one. Event times come from one clock that only moves
forward (10 ms per record, starting an hour into the demo day), so the live rating order
equals the event-time order the audit re-rates in.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

from tests.chaos.env import SEED, SUBSCRIBERS

CDR, LOGIN, ALARM, ORDER = "net.cdr.raw", "sec.login.events", "oss.alarm.raw", "bss.order.events"
#: Of every 40 records: 34 CDRs, 3 logins, 2 alarms, 1 order.
MIX = [CDR] * 34 + [LOGIN] * 3 + [ALARM] * 2 + [ORDER]
#: Products that need no provisioning: an order for them completes on submit.
PRODUCT = ("SECURITY-ANTI-FRAUD", "SECURITY")


class Load(threading.Thread):
    def __init__(self, rate: float):
        super().__init__(name="chaos-load", daemon=True)
        from telbus import demo

        self.rate = rate                    # records per second, all topics together
        self.sent: dict[str, dict] = {t: {} for t in (CDR, LOGIN, ALARM, ORDER)}   # id -> send time
        self.delivered: Counter = Counter()
        self.failed: list[str] = []
        self.fatal: str | None = None
        self.orders: dict[str, tuple[str, str]] = {}   # order_id -> (subscriber_id, action)
        self.cdr_count = 0
        self._running = threading.Event()
        self._quit = threading.Event()
        self._lock = threading.Lock()
        base = demo.DEFAULT_BASE_TIME_MS
        self._clock = itertools.count(base + 3_600_000, 10)
        self._cdrs = demo.cdr_stream(SEED, 10_000_000, SUBSCRIBERS)
        w = demo.generate(seed=SEED, subscribers=SUBSCRIBERS, cdrs=0, fraud=False, storms=0)
        self._logins = itertools.cycle([e for t, _k, e in w.events if t == LOGIN])
        self._alarms = itertools.cycle([(k, e) for t, k, e in w.events if t == ALARM])
        created = [e for t, _k, e in demo.reference_events(SEED, SUBSCRIBERS) if e["event_type"] == "SubscriberCreated"]
        self.subscribers = {e["subscriber_id"]: e["msisdn"] for e in created}
        self._order_subs = itertools.cycle(sorted(self.subscribers))
        self._holding: set[str] = set()
        self._seq = itertools.count()

    # -- control ----------------------------------------------------------------------
    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def quit(self) -> None:
        self._quit.set()
        self._running.set()

    def sent_cdrs(self) -> int:
        return self.cdr_count

    # -- records ----------------------------------------------------------------------
    def _next(self, topic: str):
        n = next(self._seq)
        t = next(self._clock)
        if topic == CDR:
            _t, key, ev = next(self._cdrs)
            ev = dict(ev, event_time=t, start_time=t)
            return key, ev, ev["cdr_id"]
        if topic == LOGIN:
            ev = dict(next(self._logins), event_id=f"CHL-{n}", login_id=f"CHLG-{n}", event_time=t)
            return ev["account"], ev, ev["login_id"]
        if topic == ALARM:
            key, ev = next(self._alarms)
            ev = dict(ev, event_id=f"CHA-{n}", alarm_id=f"CHAL-{n}", event_time=t)
            return key, ev, ev["alarm_id"]
        sub = next(self._order_subs)
        action = "REMOVE" if sub in self._holding else "ADD"
        self._holding.symmetric_difference_update({sub})
        oid = f"CHO-{n}"
        self.orders[oid] = (sub, action)
        ev = {"event_type": "OrderSubmitted", "event_id": f"CHOE-{n}", "event_time": t, "source": "CRM-GD",
              "order_id": oid, "subscriber_id": sub, "channel": "APP",
              "items": [{"action": action, "product_id": PRODUCT[0], "product_type": PRODUCT[1]}]}
        return sub, ev, oid

    def run(self) -> None:
        from telbus import codec, kafka

        def on_error(err):
            if err.fatal():
                self.fatal = self.fatal or f"{err.name()}: {err.str()}"

        producer = kafka.producer(error_cb=on_error)
        enc = codec.default_codec()
        mix = itertools.cycle(MIX)
        start, i = time.monotonic(), 0
        while not self._quit.is_set():
            if not self._running.is_set():
                producer.poll(0.1)
                start, i = time.monotonic(), 0
                continue
            i += 1
            ahead = i / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)            # pacing the load, not waiting on a result
            topic = next(mix)
            key, ev, rid = self._next(topic)

            def delivered(err, _msg, topic=topic, rid=rid):
                if err is None:
                    self.delivered[topic] += 1
                else:
                    self.failed.append(f"{topic} {rid}: {err.str()}")
            while True:
                try:
                    producer.produce(topic, enc.encode(ev), key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            self.sent[topic][rid] = time.monotonic()
            if topic == CDR:
                self.cdr_count += 1
            producer.poll(0)
        remaining = producer.flush(300)
        if remaining:
            self.failed.append(f"{remaining} record(s) still undelivered after 300 s")


class RatedWatcher(threading.Thread):
    """Reads ``bss.cdr.rated`` and ``bss.order.status`` (read_committed) as they grow: when
    each cdr_id / order_id first appeared, and how often each cdr_id did. A group-less
    consumer: it never commits, never joins a group."""

    TOPICS = {"bss.cdr.rated": "cdr_id", "bss.order.status": "order_id"}

    def __init__(self):
        super().__init__(name="chaos-rated-watcher", daemon=True)
        self.first_seen: dict[str, float] = {}          # cdr_id -> when rated
        self.order_seen: dict[str, float] = {}          # order_id -> first status
        self.count: Counter = Counter()
        self.errors = 0
        self._quit = threading.Event()

    def quit(self) -> None:
        self._quit.set()

    def run(self) -> None:
        from confluent_kafka import TopicPartition

        from telbus import codec, kafka

        c = kafka.consumer(None, **{"enable.partition.eof": False})
        try:
            tps = []
            for topic in self.TOPICS:
                md = c.list_topics(topic, timeout=30)
                tps += [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
            c.assign(tps)
            while not self._quit.is_set():
                for msg in c.consume(1000, 0.2):
                    if msg.error():
                        continue
                    now = time.monotonic()
                    try:
                        rid = codec.decode(msg.value())[self.TOPICS[msg.topic()]]
                    except Exception:
                        self.errors += 1
                        continue
                    if msg.topic() == "bss.cdr.rated":
                        self.count[rid] += 1
                        self.first_seen.setdefault(rid, now)
                    else:
                        self.order_seen.setdefault(rid, now)
        finally:
            c.close()
