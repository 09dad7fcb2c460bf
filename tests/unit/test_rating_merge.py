"""Event-time alignment (processors/merge.py) as the rating processor uses it, and N-way."""
from processors.merge import Item, Merger
from processors.rating.agent import CDR_TOPIC, RANKS, SUBSCRIBER_TOPIC

RANK_SUBSCRIBER, RANK_CDR = RANKS[SUBSCRIBER_TOPIC], RANKS[CDR_TOPIC]
SIDES = tuple(sorted(RANKS.values()))


def item(t, rank, off, arrived=0.0):
    return Item(t, rank, off, arrived, f"{'S' if rank == RANK_SUBSCRIBER else 'C'}{off}")


def names(items):
    return [i.payload for i in items]


def test_merges_by_event_time_with_subscriber_events_first_on_ties():
    m = Merger()
    for off, t in enumerate([10, 20, 30]):
        m.add(0, RANK_CDR, item(t, RANK_CDR, off))
    for off, t in enumerate([5, 20, 40]):
        m.add(0, RANK_SUBSCRIBER, item(t, RANK_SUBSCRIBER, off))
    out = m.release(0.0, caught_up=lambda g, s: True, sides=lambda g: SIDES)
    assert names(out) == ["S0", "C0", "S1", "C1", "C2", "S2"]
    assert m.pending() == 0


def test_cdrs_wait_for_a_subscriber_partition_that_is_not_caught_up():
    m = Merger(max_idle_s=0.5)
    m.add(3, RANK_CDR, item(100, RANK_CDR, 0, arrived=10.0))
    assert m.release(10.1, caught_up=lambda g, s: False, sides=lambda g: SIDES) == []
    # the subscriber event arrives: it is earlier, so it goes first
    m.add(3, RANK_SUBSCRIBER, item(50, RANK_SUBSCRIBER, 0, arrived=10.2))
    assert names(m.release(10.2, caught_up=lambda g, s: False, sides=lambda g: SIDES)) == ["S0"]
    # the CDR is released once the other side is caught up ...
    assert names(m.release(10.3, caught_up=lambda g, s: True, sides=lambda g: SIDES)) == ["C0"]


def test_waiting_is_bounded():
    m = Merger(max_idle_s=0.5)
    m.add(1, RANK_CDR, item(100, RANK_CDR, 0, arrived=10.0))
    assert m.release(10.49, caught_up=lambda g, s: False, sides=lambda g: SIDES) == []
    assert names(m.release(10.5, caught_up=lambda g, s: False, sides=lambda g: SIDES)) == ["C0"]


def test_a_side_still_delivering_a_backlog_is_waited_for_past_max_idle():
    """A fresh group replaying a backlog: the subscriber partition is fetched behind the
    CDR one. While it keeps delivering (earlier) records, the CDR waits for it; once it
    is silent for max_idle, the CDR goes."""
    m = Merger(max_idle_s=0.5)
    m.add(0, RANK_CDR, item(100, RANK_CDR, 0, arrived=10.0))
    for k, now in enumerate([10.3, 10.6, 10.9, 11.2]):
        m.add(0, RANK_SUBSCRIBER, item(50 + k, RANK_SUBSCRIBER, k, arrived=now))
        assert names(m.release(now, caught_up=lambda g, s: False, sides=lambda g: SIDES)) == [f"S{k}"]
    # its SubscriberCreated comes 1.5 s after the CDR and still goes first
    m.add(0, RANK_SUBSCRIBER, item(90, RANK_SUBSCRIBER, 4, arrived=11.5))
    assert names(m.release(11.5, caught_up=lambda g, s: False, sides=lambda g: SIDES)) == ["S4"]
    assert m.release(11.99, caught_up=lambda g, s: False, sides=lambda g: SIDES) == []
    assert names(m.release(12.0, caught_up=lambda g, s: False, sides=lambda g: SIDES)) == ["C0"]


def test_groups_are_independent_and_drop_forgets_a_revoked_partition():
    m = Merger()
    m.add(0, RANK_CDR, item(1, RANK_CDR, 0))
    m.add(1, RANK_CDR, item(1, RANK_CDR, 0))
    m.drop(1)
    out = m.release(0.0, caught_up=lambda g, s: g == 0, sides=lambda g: SIDES)
    assert len(out) == 1 and m.pending() == 0


def test_n_way_group_waits_for_every_side_that_is_not_caught_up():
    m = Merger(max_idle_s=5)
    sides = [("a", 0), ("a", 1), ("t", 0)]
    m.add("all", ("a", 0), Item(30, 2, 0, 0.0, "a0@30"))
    m.add("all", ("a", 1), Item(10, 2, 0, 0.0, "a1@10"))
    # ("t", 0) has nothing buffered and is not caught up: nothing may go yet
    assert m.release(1.0, lambda g, s: s != ("t", 0), lambda g: sides) == []
    m.add("all", ("t", 0), Item(20, 0, 0, 1.0, "t0@20"))
    out = m.release(1.0, lambda g, s: True, lambda g: sides)
    assert names(out) == ["a1@10", "t0@20", "a0@30"]
