"""processors/aligned.py: event-time order across co-partitioned topics, undecodable
records kept in their place, revocation and rewind forget what was buffered."""
from types import SimpleNamespace

from processors.aligned import AlignedInputs

SUBS, ORDERS = "bss.subscriber.events", "bss.order.events"


def msg(topic, partition, offset):
    return SimpleNamespace(topic=lambda: topic, partition=lambda: partition, offset=lambda: offset)


class Consumer:
    """High watermarks per (topic, partition); positions unknown (-1001)."""

    def __init__(self, highs):
        self.highs = highs

    def get_watermark_offsets(self, tp, cached=True):
        return 0, self.highs.get((tp.topic, tp.partition), 0)

    def position(self, tps):
        return [SimpleNamespace(offset=-1001) for _ in tps]


def feed(inputs, records, now=0.0):
    for topic, partition, offset, ev in records:
        m = msg(topic, partition, offset)
        inputs.seen(m)
        inputs.add(m, ev, now)


def names(pairs):
    return [(m.topic()[4:7], m.offset()) for m, _ev in pairs]


def test_subscriber_event_goes_before_an_order_fetched_earlier():
    a = AlignedInputs({SUBS: 1, ORDERS: 2}, max_idle_s=0.5)
    c = Consumer({(SUBS, 0): 1, (ORDERS, 0): 1})
    feed(a, [(ORDERS, 0, 0, {"event_time": 100})])
    assert a.release(c, 0.1) == []            # the subscriber partition is not fetched yet
    feed(a, [(SUBS, 0, 0, {"event_time": 100})])
    assert names(a.release(c, 0.2)) == [("sub", 0), ("ord", 0)]


def test_waits_at_most_max_idle_for_a_side_with_nothing_fetched():
    a = AlignedInputs({SUBS: 1, ORDERS: 2}, max_idle_s=0.5)
    c = Consumer({(SUBS, 0): 5, (ORDERS, 0): 1})  # subscriber partition has data not yet fetched
    feed(a, [(ORDERS, 0, 0, {"event_time": 100})], now=10.0)
    assert a.release(c, 10.4) == []
    assert names(a.release(c, 10.6)) == [("ord", 0)]


def test_an_undecodable_record_keeps_its_place_behind_earlier_ones():
    a = AlignedInputs({SUBS: 1, ORDERS: 2}, max_idle_s=0.5)
    c = Consumer({(SUBS, 0): 3, (ORDERS, 0): 3})
    feed(a, [(ORDERS, 0, 0, {"event_time": 300}), (ORDERS, 0, 1, None), (ORDERS, 0, 2, {"event_time": 400}),
             (SUBS, 0, 0, {"event_time": 200}), (SUBS, 0, 1, {"event_time": 350}),
             (SUBS, 0, 2, {"event_time": 500})])
    out = a.release(c, 0.0)
    assert names(out) == [("sub", 0), ("ord", 0), ("ord", 1), ("sub", 1), ("ord", 2), ("sub", 2)]
    assert out[2][1] is None


def test_revoke_and_clear_forget_buffered_records():
    a = AlignedInputs({SUBS: 1, ORDERS: 2}, max_idle_s=0.5)
    feed(a, [(ORDERS, 0, 0, {"event_time": 1}), (ORDERS, 1, 0, {"event_time": 1})])
    a.revoke([SimpleNamespace(topic=ORDERS, partition=0)])
    assert (ORDERS, 0) not in a.fetched and a.merger.pending() == 1
    a.clear()
    assert a.merger.pending() == 0 and a.fetched == {}


ALARMS, TOPO = "oss.alarm.raw", "oss.topology"


def test_across_partitions_one_order_over_every_assigned_partition():
    a = AlignedInputs({TOPO: 0, ALARMS: 2}, max_idle_s=0.5, across_partitions=True)
    a.assign([SimpleNamespace(topic=ALARMS, partition=0), SimpleNamespace(topic=ALARMS, partition=1),
              SimpleNamespace(topic=TOPO, partition=0)])
    c = Consumer({(ALARMS, 0): 2, (ALARMS, 1): 1, (TOPO, 0): 1})
    feed(a, [(ALARMS, 0, 0, {"event_time": 300}), (ALARMS, 0, 1, {"event_time": 400})])
    assert a.release(c, 0.1) == []            # partition 1 and the topology not fetched yet
    feed(a, [(ALARMS, 1, 0, {"event_time": 100}), (TOPO, 0, 0, {"event_time": 300})])
    assert [(m.topic(), m.partition(), m.offset()) for m, _ in a.release(c, 0.2)] == [
        (ALARMS, 1, 0), (TOPO, 0, 0), (ALARMS, 0, 0), (ALARMS, 0, 1)]


def test_across_partitions_a_bad_record_waits_behind_its_partition():
    """An undecodable record (or a tombstone) is not handed over ahead of earlier records
    of its own partition that still wait: its offset would be committed past them."""
    a = AlignedInputs({TOPO: 0, ALARMS: 2}, max_idle_s=0.5, across_partitions=True)
    a.assign([SimpleNamespace(topic=ALARMS, partition=0), SimpleNamespace(topic=ALARMS, partition=1)])
    c = Consumer({(ALARMS, 0): 2, (ALARMS, 1): 5})   # partition 1 has more to fetch
    feed(a, [(ALARMS, 0, 0, {"event_time": 300}), (ALARMS, 0, 1, None)], now=10.0)
    assert a.release(c, 10.1) == []
    assert [(m.offset(), ev) for m, ev in a.release(c, 10.6)] == [(0, {"event_time": 300}), (1, None)]
    a.revoke([SimpleNamespace(topic=ALARMS, partition=1)])
    assert a.assigned == {(ALARMS, 0)}
