"""Input topics read by one consumer, handed over in event-time order.

:class:`processors.merge.Merger` decides the order (pure); this adds what it needs to
know from the consumer: which buffer a record belongs to, and whether a partition has
been fetched to its high watermark (then nothing earlier can still come from it).

Two groupings:

* per partition number (default): co-partitioned topics, one order per partition
  number, one side per topic. Rating (subscriber events before the CDRs of the same
  moment) and subscription sync (subscriber events before the orders): without it, a
  burst of one topic fetched ahead of the other made a new subscriber's first call or
  order arrive before the SubscriberCreated it depends on.
* ``across_partitions``: one order over every assigned partition of every topic, one side
  per topic partition. The alarm intake: a storm's sites sit in different partitions, and
  a backlog fetched one site far ahead of another would clear symptoms before their root
  cause arrived.

Either way a record without a usable event time (undecodable, a tombstone) keeps its
place in its partition's queue: handled out of turn, its offset would be committed past
records of the same partition still waiting.
"""
from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition

from processors import merge

_ALL = "all"


class AlignedInputs:
    def __init__(self, ranks: dict[str, int], max_idle_s: float, across_partitions: bool = False):
        """``ranks``: topic -> rank; at equal event time the lower rank goes first."""
        self.ranks = dict(ranks)
        self.across = across_partitions
        self.sides = tuple(sorted(self.ranks.values()))
        self.topics = {rank: topic for topic, rank in self.ranks.items()}
        self.assigned: set[tuple[str, int]] = set()      # across_partitions: the sides
        self.merger = merge.Merger(max_idle_s)
        self.fetched: dict[tuple[str, int], int] = {}   # next offset fetched per topic partition

    def assign(self, tps) -> None:
        self.assigned.update((tp.topic, tp.partition) for tp in tps if tp.topic in self.ranks)

    def seen(self, m) -> None:
        """Every fetched record, aligned or not: how far each partition has been fetched."""
        self.fetched[(m.topic(), m.partition())] = m.offset() + 1

    def add(self, m, ev: dict | None, now: float) -> None:
        """A record of one of the ranked topics, decoded (``ev``) or not (None); released by
        :meth:`release` in its partition's order."""
        rank = self.ranks[m.topic()]
        t = ev.get("event_time") if isinstance(ev, dict) else None
        group, side = (_ALL, (m.topic(), m.partition())) if self.across else (m.partition(), rank)
        self.merger.add(group, side, merge.Item(t if isinstance(t, int) else 0, rank, m.offset(), now, (m, ev)))

    def release(self, consumer, now: float) -> list[tuple]:
        """``(message, event)`` pairs that can be processed now, in order per group."""
        sides = (lambda _g: sorted(self.assigned)) if self.across else (lambda _g: self.sides)
        items = self.merger.release(now, lambda g, side: self._caught_up(consumer, g, side), sides)
        return [it.payload for it in items]

    def _caught_up(self, consumer, group, side) -> bool:
        """Has this side's topic partition been fetched to its high watermark (as last seen)?"""
        tp = TopicPartition(*side) if self.across else TopicPartition(self.topics[side], group)
        try:
            _lo, hi = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return False
        nxt = self.fetched.get((tp.topic, tp.partition))
        if nxt is None:
            pos = consumer.position([tp])[0].offset
            nxt = pos if pos >= 0 else None
        return hi is not None and hi >= 0 and nxt is not None and nxt >= hi

    def revoke(self, tps) -> None:
        for tp in tps:
            self.fetched.pop((tp.topic, tp.partition), None)
            if tp.topic not in self.ranks:
                continue
            if self.across:
                self.assigned.discard((tp.topic, tp.partition))
                self.merger.drop(_ALL, (tp.topic, tp.partition))
            else:
                self.merger.drop(tp.partition)

    def clear(self) -> None:
        """After a rewind to the committed offsets: everything buffered is fetched again."""
        self.merger.clear()
        self.fetched.clear()
