"""Event-time alignment of inputs consumed together (pure: no Kafka).

A consumer fetches its partitions independently: with a backlog it can hand over a burst
of one partition's records long before another partition's earlier ones. Rating in that
order rejected new subscribers' first calls as unknown (their SubscriberCreated was still
unfetched on the other topic); alarm correlation cleared symptoms before their root cause's
alarm, fetched late from another site's partition, could take them over.

So, like Kafka Streams' task idling, the records of one *group* of partitions are released
in event-time order: the earliest head among the group's buffers goes next (ties by rank,
then offset). While one of the group's partitions has nothing buffered, the others wait only
as long as that partition may still hold earlier records: until it is known to be caught up
(fetched to its high watermark), or it has been silent for ``max_idle_s`` -- counted from
the later of the waiting head's arrival and that partition's last record. A partition still
delivering a backlog is therefore waited for however long the backlog takes; one that says
nothing (a transaction marker keeps it just short of its watermark, a slow fetch) costs at
most ``max_idle_s``. Counting only from the head's arrival let a fresh group replaying a
backlog on a busy machine release an order half a second ahead of its subscriber's
creation, still being fetched from the other topic.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable


@dataclass(order=True)
class Item:
    event_time: int
    rank: int          # tie-break between inputs at the same event time (lower first)
    offset: int
    arrived: float = field(compare=False)
    payload: Any = field(compare=False)


class Merger:
    """Buffers records per (group, side) and releases them in event-time order per group."""

    def __init__(self, max_idle_s: float = 0.5):
        self.max_idle_s = max_idle_s
        self.buffers: dict[tuple[Hashable, Hashable], deque[Item]] = {}
        self.last_arrival: dict[tuple[Hashable, Hashable], float] = {}

    def add(self, group: Hashable, side: Hashable, item: Item) -> None:
        self.buffers.setdefault((group, side), deque()).append(item)
        self.last_arrival[(group, side)] = item.arrived      # callers' clocks only move forward

    def drop(self, group: Hashable, side: Hashable | None = None) -> None:
        """Forget buffered records of a revoked group (or of one side of it)."""
        for store in (self.buffers, self.last_arrival):
            for g, s in list(store):
                if g == group and (side is None or s == side):
                    del store[(g, s)]

    def clear(self) -> None:
        self.buffers.clear()
        self.last_arrival.clear()

    def pending(self) -> int:
        return sum(len(q) for q in self.buffers.values())

    def release(self, now: float, caught_up: Callable[[Hashable, Hashable], bool],
                sides: Callable[[Hashable], Iterable[Hashable]]) -> list[Item]:
        """Every record that can be processed now, in processing order per group.

        ``sides(group)``: every side the group reads (also those with nothing buffered);
        ``caught_up(group, side)``: that side has been fetched to its high watermark.
        """
        out: list[Item] = []
        for group in sorted({g for g, _s in self.buffers}, key=str):
            expected = list(sides(group))
            while True:
                queues = {s: self.buffers.get((group, s)) for s in expected}
                heads = {s: q[0] for s, q in queues.items() if q}
                if not heads:
                    break
                side = min(heads, key=lambda s: heads[s])
                head = heads[side]
                waiting_on = [s for s in expected if s not in heads and not caught_up(group, s)]
                if waiting_on:
                    since = max(head.arrived, *(self.last_arrival.get((group, s), head.arrived)
                                                for s in waiting_on))
                    if now - since < self.max_idle_s:
                        break
                out.append(queues[side].popleft())
        return out
