"""Co-partitioned input topics read by one consumer, handed over in event-time order.

:class:`processors.merge.Merger` decides the order (pure); this adds what it needs to
know from the consumer: which topic is which side, and whether a side of a partition has
been fetched to its high watermark (then nothing earlier can still come from it). Rating
(subscriber events before the CDRs of the same moment) and subscription sync (subscriber
events before the orders) read their inputs through it: without it, a burst of one topic
fetched ahead of the other made a new subscriber's first call or order arrive before the
SubscriberCreated it depends on.
"""
from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition

from processors import merge


class AlignedInputs:
    def __init__(self, ranks: dict[str, int], max_idle_s: float):
        """``ranks``: topic -> side; at equal event time the lower rank goes first."""
        self.ranks = dict(ranks)
        self.sides = tuple(sorted(self.ranks.values()))
        self.topics = {rank: topic for topic, rank in self.ranks.items()}
        self.merger = merge.Merger(max_idle_s)
        self.fetched: dict[tuple[str, int], int] = {}   # next offset fetched per topic partition

    def seen(self, m) -> None:
        """Every fetched record, aligned or not: how far each partition has been fetched."""
        self.fetched[(m.topic(), m.partition())] = m.offset() + 1

    def add(self, m, ev: dict | None, now: float) -> None:
        """A record of one of the ranked topics, decoded (``ev``) or not (None); released by
        :meth:`release`. An undecodable record keeps its place in its partition's queue:
        handled out of turn, its offset would be committed past records still waiting."""
        rank = self.ranks[m.topic()]
        t = ev.get("event_time") if isinstance(ev, dict) else None
        self.merger.add(m.partition(), rank,
                        merge.Item(t if isinstance(t, int) else 0, rank, m.offset(), now, (m, ev)))

    def release(self, consumer, now: float) -> list[tuple]:
        """``(message, event)`` pairs that can be processed now, in order per partition."""
        items = self.merger.release(now, lambda p, side: self._caught_up(consumer, p, side),
                                    lambda _p: self.sides)
        return [it.payload for it in items]

    def _caught_up(self, consumer, partition: int, side: int) -> bool:
        """Has ``side``'s topic partition been fetched to its high watermark (as last seen)?"""
        tp = TopicPartition(self.topics[side], partition)
        try:
            _lo, hi = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return False
        nxt = self.fetched.get((tp.topic, partition))
        if nxt is None:
            pos = consumer.position([tp])[0].offset
            nxt = pos if pos >= 0 else None
        return hi is not None and hi >= 0 and nxt is not None and nxt >= hi

    def revoke(self, tps) -> None:
        for tp in tps:
            self.fetched.pop((tp.topic, tp.partition), None)
            if tp.topic in self.ranks:
                self.merger.drop(tp.partition)

    def clear(self) -> None:
        """After a rewind to the committed offsets: everything buffered is fetched again."""
        self.merger.clear()
        self.fetched.clear()
