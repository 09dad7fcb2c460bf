"""Network topology and subscriber placement for alarm correlation (pure logic).

State is held in plain mutable mappings whose values are JSON-compatible, so the
shell can pass maps that record their changes for a changelog in place of dicts:

``nes``          ne_id -> {"ne_type", "parent_ne_id", "site_id", "services", "event_time"}
``children``     ne_id -> sorted list of ne_ids whose parent_ne_id is that ne_id
                 (the parent need not be known itself)
``subscribers``  subscriber_id -> {"ne_id": access NE or None, "event_time"}
``subs_per_ne``  ne_id -> number of subscribers placed on that NE (absent when 0)

Every write is a re-assignment (``mapping[key] = new_value``), never an in-place
mutation of a stored value: a changelog only sees assignments.

Rules
- NetworkElement events are upserts keyed by ne_id. An event older (event time) than
  the stored version of that NE is ignored, so a re-delivered or late old version
  cannot undo a newer one; equal times re-apply (idempotent). Re-parenting therefore
  takes effect for every alarm processed after it; nothing already published changes.
- A tombstone on the compacted topic removes the NE (``remove_ne``); its children keep
  their parent_ne_id and simply have an unknown parent.
- SubscriberCreated places the subscriber on ``access_ne_id`` (absent: not placed).
  A later SubscriberCreated for the same subscriber (event time >= stored) moves it, and
  the count moves with it. Other subscriber event types do not touch placement.
- Parent chains and subtrees are walked with a visited set, so a cycle in bad topology
  data ends the walk instead of looping.

Derived values (subtrees, per-subtree counts) are cached in memory only; the cache is
dropped on every change, so it never outlives the state it was computed from.
"""

from __future__ import annotations

from bisect import insort
from typing import Any, MutableMapping

__all__ = ["Topology", "TopologyError", "validate_ne", "validate_subscriber"]


class TopologyError(ValueError):
    """A topology or subscriber event is malformed (the shell sends it to the DLQ)."""


def _require_str(event: dict, field: str) -> str:
    value = event.get(field)
    if not isinstance(value, str) or not value:
        raise TopologyError(f"{field} missing or not a non-empty string")
    return value


def _require_time(event: dict) -> int:
    value = event.get("event_time")
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError("event_time missing or not int epoch millis")
    return value


def validate_ne(event: dict) -> None:
    """Raise TopologyError unless event is a well-formed NetworkElement."""
    if not isinstance(event, dict):
        raise TopologyError("NetworkElement is not a record")
    ne_id = _require_str(event, "ne_id")
    _require_str(event, "site_id")
    _require_str(event, "ne_type")
    _require_time(event)
    parent = event.get("parent_ne_id")
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise TopologyError("parent_ne_id must be a non-empty string or null")
    if parent == ne_id:
        raise TopologyError("parent_ne_id equals ne_id")
    services = event.get("services")
    if not isinstance(services, list) or not all(isinstance(x, str) for x in services):
        raise TopologyError("services must be a list of strings")


def validate_subscriber(event: dict) -> None:
    """Raise TopologyError unless event carries a usable subscriber placement."""
    if not isinstance(event, dict):
        raise TopologyError("SubscriberCreated is not a record")
    _require_str(event, "subscriber_id")
    _require_time(event)
    ne_id = event.get("access_ne_id")
    if ne_id is not None and (not isinstance(ne_id, str) or not ne_id):
        raise TopologyError("access_ne_id must be a non-empty string or null")


class Topology:
    """NE registry, parent/child index and subscriber placement."""

    def __init__(
        self,
        nes: MutableMapping[str, Any] | None = None,
        children: MutableMapping[str, Any] | None = None,
        subscribers: MutableMapping[str, Any] | None = None,
        subs_per_ne: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.nes = {} if nes is None else nes
        self.children = {} if children is None else children
        self.subscribers = {} if subscribers is None else subscribers
        self.subs_per_ne = {} if subs_per_ne is None else subs_per_ne
        self._subtree_cache: dict[str, frozenset[str]] = {}
        self._count_cache: dict[str, int] = {}
        self._services_cache: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ state I/O
    def to_dict(self) -> dict:
        return {
            "nes": dict(self.nes),
            "children": dict(self.children),
            "subscribers": dict(self.subscribers),
            "subs_per_ne": dict(self.subs_per_ne),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Topology":
        return cls(
            nes=dict(data.get("nes", {})),
            children=dict(data.get("children", {})),
            subscribers=dict(data.get("subscribers", {})),
            subs_per_ne=dict(data.get("subs_per_ne", {})),
        )

    def invalidate(self) -> None:
        """Drop the in-memory caches (after the mappings changed behind our back,
        e.g. a table restored from its changelog on a rebalance)."""
        self._topology_changed()

    def _topology_changed(self) -> None:
        self._subtree_cache.clear()
        self._count_cache.clear()
        self._services_cache.clear()

    def _placement_changed(self) -> None:
        self._count_cache.clear()

    # ------------------------------------------------------------------ updates
    def _unlink(self, child: str, parent: str | None) -> None:
        if parent is None:
            return
        kids = [c for c in self.children.get(parent, []) if c != child]
        if kids:
            self.children[parent] = kids
        elif parent in self.children:
            del self.children[parent]

    def _link(self, child: str, parent: str | None) -> None:
        if parent is None:
            return
        kids = list(self.children.get(parent, []))
        if child not in kids:
            insort(kids, child)
        self.children[parent] = kids

    def apply_ne(self, event: dict) -> bool:
        """Upsert one NetworkElement event. Returns False when ignored as stale."""
        validate_ne(event)
        ne_id, site_id, ne_type = event["ne_id"], event["site_id"], event["ne_type"]
        t = event["event_time"]
        parent = event.get("parent_ne_id")
        services = event["services"]
        old = self.nes.get(ne_id)
        if old is not None and t < old["event_time"]:
            return False
        old_parent = old["parent_ne_id"] if old is not None else None
        if old_parent != parent:
            self._unlink(ne_id, old_parent)
            self._link(ne_id, parent)
        self.nes[ne_id] = {
            "ne_type": ne_type,
            "parent_ne_id": parent,
            "site_id": site_id,
            "services": sorted(set(services)),
            "event_time": t,
        }
        self._topology_changed()
        return True

    def remove_ne(self, ne_id: str) -> bool:
        """Tombstone on the compacted topology topic: forget the NE."""
        old = self.nes.get(ne_id)
        if old is None:
            return False
        self._unlink(ne_id, old["parent_ne_id"])
        del self.nes[ne_id]
        self._topology_changed()
        return True

    def apply_subscriber(self, event: dict) -> bool:
        """Apply a subscriber event. Only SubscriberCreated carries a placement.

        Returns True when the placement changed.
        """
        if event.get("event_type") not in (None, "SubscriberCreated"):
            return False
        validate_subscriber(event)
        sub_id, t = event["subscriber_id"], event["event_time"]
        ne_id = event.get("access_ne_id")
        old = self.subscribers.get(sub_id)
        if old is not None and t < old["event_time"]:
            return False
        old_ne = old["ne_id"] if old is not None else None
        self.subscribers[sub_id] = {"ne_id": ne_id, "event_time": t}
        if old_ne == ne_id:
            return False
        if old_ne is not None:
            n = self.subs_per_ne.get(old_ne, 0) - 1
            if n > 0:
                self.subs_per_ne[old_ne] = n
            elif old_ne in self.subs_per_ne:
                del self.subs_per_ne[old_ne]
        if ne_id is not None:
            self.subs_per_ne[ne_id] = self.subs_per_ne.get(ne_id, 0) + 1
        self._placement_changed()
        return True

    # ------------------------------------------------------------------ queries
    def known(self, ne_id: str) -> bool:
        return ne_id in self.nes

    def parent(self, ne_id: str) -> str | None:
        ne = self.nes.get(ne_id)
        return None if ne is None else ne["parent_ne_id"]

    def site_of(self, ne_id: str) -> str | None:
        ne = self.nes.get(ne_id)
        return None if ne is None else ne["site_id"]

    def ancestors(self, ne_id: str) -> list[str]:
        """Parent chain, nearest first, without ne_id itself; stops at a cycle."""
        chain: list[str] = []
        seen = {ne_id}
        cur = self.parent(ne_id)
        while cur is not None and cur not in seen:
            chain.append(cur)
            seen.add(cur)
            cur = self.parent(cur)
        return chain

    def subtree(self, ne_id: str) -> frozenset[str]:
        """ne_id and every NE below it (cycle-safe)."""
        cached = self._subtree_cache.get(ne_id)
        if cached is not None:
            return cached
        seen = {ne_id}
        stack = [ne_id]
        while stack:
            cur = stack.pop()
            for kid in self.children.get(cur, ()):
                if kid not in seen:
                    seen.add(kid)
                    stack.append(kid)
        result = frozenset(seen)
        self._subtree_cache[ne_id] = result
        return result

    def subtree_services(self, ne_id: str) -> list[str]:
        """Sorted union of the services of the known NEs in the subtree."""
        cached = self._services_cache.get(ne_id)
        if cached is not None:
            return list(cached)
        services: set[str] = set()
        for ne in self.subtree(ne_id):
            rec = self.nes.get(ne)
            if rec is not None:
                services.update(rec["services"])
        result = sorted(services)
        self._services_cache[ne_id] = result
        return list(result)

    def subtree_subscribers(self, ne_id: str) -> int:
        """Number of subscribers whose access NE lies in the subtree."""
        cached = self._count_cache.get(ne_id)
        if cached is not None:
            return cached
        total = 0
        for ne in self.subtree(ne_id):
            total += self.subs_per_ne.get(ne, 0)
        self._count_cache[ne_id] = total
        return total
