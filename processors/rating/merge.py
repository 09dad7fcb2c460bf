"""Event-time alignment of co-partitioned inputs (pure: no Kafka).

``net.cdr.raw`` and ``bss.subscriber.events`` partition *p* hold one set of subscribers'
events, but a consumer fetches the two topics independently: with a backlog it can hand
over a burst of CDRs before the SubscriberCreated or PlanChanged they depend on. Rating
in arrival order would then reject a new subscriber's first calls as unknown, and the
live results would differ from ``telbus audit``'s event-time re-rating.

So, like Kafka Streams' task idling, each co-partition pair is merged by event time:
the next record processed is the earlier head of the two buffers (ties: subscriber events
first, the contract's audit order). When one side has nothing buffered, the other side
waits only while the empty side may still hold earlier records: until that partition is
known to be caught up (fetched to its high watermark), or at most ``max_idle_s``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

RANK_FIRST = 0      # plans, undecodable records: never wait
RANK_SUBSCRIBER = 1
RANK_CDR = 2


@dataclass(order=True)
class Item:
    event_time: int
    rank: int
    offset: int
    arrived: float = field(compare=False)
    payload: Any = field(compare=False)


class Merger:
    """Buffers records per (group, side) and releases them in event-time order."""

    def __init__(self, max_idle_s: float = 0.5):
        self.max_idle_s = max_idle_s
        self.buffers: dict[tuple[Hashable, int], deque[Item]] = {}

    def add(self, group: Hashable, side: int, item: Item) -> None:
        """``side``: RANK_SUBSCRIBER or RANK_CDR; ``group``: the partition number."""
        self.buffers.setdefault((group, side), deque()).append(item)

    def drop(self, group: Hashable) -> None:
        for side in (RANK_SUBSCRIBER, RANK_CDR):
            self.buffers.pop((group, side), None)

    def clear(self) -> None:
        self.buffers.clear()

    def pending(self) -> int:
        return sum(len(q) for q in self.buffers.values())

    def release(self, now: float, caught_up: Callable[[Hashable, int], bool]) -> list[Item]:
        """Every record that can be processed now, in processing order per group."""
        out: list[Item] = []
        for group in sorted({g for g, _s in self.buffers}, key=str):
            subs = self.buffers.get((group, RANK_SUBSCRIBER)) or deque()
            cdrs = self.buffers.get((group, RANK_CDR)) or deque()
            while subs or cdrs:
                if subs and cdrs:
                    q = subs if subs[0] <= cdrs[0] else cdrs
                else:
                    q, other_side = (subs, RANK_CDR) if subs else (cdrs, RANK_SUBSCRIBER)
                    if not (caught_up(group, other_side) or now - q[0].arrived >= self.max_idle_s):
                        break
                out.append(q.popleft())
        return out
