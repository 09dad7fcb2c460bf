"""The topic catalog (``catalog.toml``) and its reconciliation with a cluster.

``apply`` only ever creates what is missing. Drift (a partition count or config that
differs from the catalog) is reported, never "fixed": shrinking partitions or changing a
cleanup policy would destroy data or break co-partitioning, which is an operator's call.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
SCHEMAS_TOPIC = "_telbus.schemas"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    partitions: int
    events: tuple[str, ...]
    kind: str                      # input | output | schemas | dlq
    config: dict = field(default_factory=dict, hash=False)
    replication_factor: int = 1

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX


@lru_cache(maxsize=None)
def catalog() -> dict[str, Topic]:
    raw = tomllib.loads(CATALOG_FILE.read_text())
    d = raw["defaults"]
    rf = int(os.environ.get("TELBUS_TOPIC_REPLICATION") or d["replication_factor"])
    min_isr = str(os.environ.get("TELBUS_TOPIC_MIN_ISR") or d["min_insync_replicas"])
    out: dict[str, Topic] = {}
    for name, t in raw["topics"].items():
        cfg = {"min.insync.replicas": min_isr, **t.get("config", {})}
        out[name] = Topic(name, t["key"], t["partitions"], tuple(t["events"]), t["kind"], cfg, rf)
        if t["kind"] in ("input", "output"):
            # Larger records than the input allows: a dead letter is the original plus headers.
            dlq_cfg = {"min.insync.replicas": min_isr, "cleanup.policy": "delete",
                       "retention.ms": str(d["dlq_retention_ms"]),
                       "max.message.bytes": str(d["dlq_max_message_bytes"])}
            out[name + DLQ_SUFFIX] = Topic(name + DLQ_SUFFIX, t["key"], t["partitions"], (), "dlq", dlq_cfg, rf)
    return out


def contract_topics(kind: str | None = None) -> list[Topic]:
    """Input and output topics (not DLQs, not the schema topic), optionally of one kind."""
    return [t for t in catalog().values() if t.kind in ("input", "output") and (kind is None or t.kind == kind)]


@lru_cache(maxsize=None)
def topic_for_event(event_type: str) -> str:
    for t in catalog().values():
        if event_type in t.events:
            return t.name
    raise KeyError(f"no topic carries {event_type}")


def key_of(topic: str, event: dict) -> str:
    """The record key the contract prescribes for an event on a topic."""
    field_name = catalog()[topic].key
    if field_name == "plan_id@version":
        return f"{event['plan_id']}@{event['version']}"
    value = event.get(field_name)
    if value is None:
        raise ValueError(f"{event.get('event_type')} on {topic} has no key field {field_name}")
    return str(value)


# -- reconciliation -------------------------------------------------------------------

@dataclass
class TopicReport:
    name: str
    status: str                  # created | ok | drift | missing | extra
    details: list[str] = field(default_factory=list)


def inspect(admin, create: bool, specs: dict[str, Topic] | None = None) -> list[TopicReport]:
    """Compare the catalog (or ``specs``) with the cluster; with ``create`` make what is missing."""
    from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

    specs = catalog() if specs is None else specs
    meta = admin.list_topics(timeout=15)
    existing = meta.topics
    reports: list[TopicReport] = []
    to_create = []
    for t in specs.values():
        if t.name not in existing:
            if create:
                to_create.append(NewTopic(t.name, num_partitions=t.partitions,
                                          replication_factor=t.replication_factor, config=dict(t.config)))
            reports.append(TopicReport(t.name, "created" if create else "missing"))
    if to_create:
        for name, fut in admin.create_topics(to_create, request_timeout=30).items():
            try:
                fut.result()
            except Exception as exc:  # already exists (race) is fine; anything else is reported
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    next(r for r in reports if r.name == name).details.append(f"create failed: {exc}")
    present = [t for t in specs.values() if t.name in existing]
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, t.name) for t in present]
        configs = {r.name: f.result() for r, f in admin.describe_configs(resources, request_timeout=30).items()}
        for t in present:
            details = []
            actual_parts = len(existing[t.name].partitions)
            if actual_parts != t.partitions:
                details.append(f"partitions: catalog {t.partitions}, cluster {actual_parts}")
            live = configs[t.name]
            for k, want in t.config.items():
                have = live[k].value if k in live else None
                if str(have) != str(want):
                    details.append(f"{k}: catalog {want}, cluster {have}")
            reports.append(TopicReport(t.name, "drift" if details else "ok", details))
    return sorted(reports, key=lambda r: r.name)
