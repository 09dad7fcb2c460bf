"""ClickHouse tables derived from the Avro schemas: one mapping, one place.

Every contract topic lands in one table named after the topic with dots as underscores
(``net.cdr.raw`` -> ``net_cdr_raw``). A topic that carries several event types
(``bss.subscriber.events``, ``bss.order.events``) gets one table holding the union of the
fields of its types plus an ``event_type`` column; a field that is not in every type of
the topic is nullable.

Type mapping (Avro -> ClickHouse):

===============================  =============================================
string                           String
int / long                       Int32 / Int64 (money is Int64 li)
boolean                          Bool
float / double                   Float32 / Float64
bytes / fixed(n)                 String / FixedString(n)
long timestamp-millis            DateTime64(3, 'UTC')   (inserted as epoch ms)
enum                             LowCardinality(String)
["null", T]                      Nullable(T), with ClickHouse's rules:
                                 LowCardinality(Nullable(X)) for enums (ClickHouse
                                 refuses Nullable(LowCardinality(X))); Array, Map and
                                 Tuple cannot be Nullable, so an absent value is the
                                 empty array / map (documented, no information lost for
                                 these schemas: an empty list and "none" mean the same)
array<string>                    Array(String)
array<record>                    Array(Tuple(name T, ...)) — a named tuple keeps the
                                 items queryable (``arrayJoin(items).product_id``)
                                 without JSON parsing, and keeps the item types
map<long>                        Map(String, Int64)
nested record (field)            flattened columns ``<field>_<subfield>`` — each
                                 becomes an ordinary, filterable, typed column
                                 (``voice_increment_s``); a Tuple column would need
                                 ``voice.increment_s`` access and cannot be partially
                                 nullable
===============================  =============================================

Kafka metadata columns on every table: ``_topic``, ``_partition``, ``_offset`` and
``_timestamp`` (the Kafka record timestamp).

PII: ``real_name`` and ``id_number`` never land in clear. Their columns are
``real_name_hmac`` / ``id_number_hmac``: lowercase hex HMAC-SHA256 with the secret from
``TELBUS_PII_KEY`` (see :mod:`sinks.pii`).

Engine: ``ReplacingMergeTree ORDER BY (_partition, _offset)`` — see :mod:`sinks.store`
for the exactly-once reasoning.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: Fields that are personal data: stored only as a keyed hash, under ``<name>_hmac``.
PII_FIELDS = ("real_name", "id_number")
PII_SUFFIX = "_hmac"

#: Metadata columns appended to every topic table, in order.
META_COLUMNS = (
    ("_topic", "LowCardinality(String)"),
    ("_partition", "Int32"),
    ("_offset", "Int64"),
    ("_timestamp", "DateTime64(3, 'UTC')"),
)

#: Used only when the lead's topic catalog (topics/catalog.toml) cannot be imported.
_FALLBACK_TOPICS: dict[str, tuple[str, ...]] = {
    "bss.subscriber.events": ("SubscriberCreated", "PlanChanged", "StatusChanged", "BalanceRecharged"),
    "bss.order.events": ("OrderSubmitted", "WorkOrderDispatched", "WorkOrderCompleted"),
    "bss.tariff.plans": ("TariffPlan",),
    "net.cdr.raw": ("Cdr",),
    "oss.topology": ("NetworkElement",),
    "oss.alarm.raw": ("Alarm",),
    "sec.login.events": ("Login",),
    "bss.cdr.rated": ("RatedCdr",),
    "ocs.credit.control": ("CreditControl",),
    "sec.fraud.alerts": ("FraudAlert",),
    "oss.incidents": ("IncidentEvent",),
    "bss.order.status": ("OrderStatus",),
    "bss.subscription.state": ("SubscriptionState",),
}

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"


class MappingError(ValueError):
    """A schema construct or an event this mapping cannot represent."""


# ---------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CHType:
    """A ClickHouse type with enough structure to apply the Nullable rules."""

    base: str                  # e.g. "String", "Array(String)", "DateTime64(3, 'UTC')"
    low_cardinality: bool = False
    nullable: bool = False
    container: bool = False    # Array / Map / Tuple: cannot be Nullable
    timestamp: bool = False    # epoch-ms ints on the way in

    def sql(self) -> str:
        inner = self.base
        if self.nullable and not self.container:
            inner = f"Nullable({inner})"
        if self.low_cardinality:
            inner = f"LowCardinality({inner})"
        return inner

    def as_nullable(self) -> "CHType":
        if self.container:
            return self        # absent -> empty container
        return CHType(self.base, self.low_cardinality, True, False, self.timestamp)

    def empty(self):
        """Value stored when the field is absent/null."""
        if not self.container:
            return None
        return {} if self.base.startswith("Map(") else []


def _named(t, named: dict) -> object:
    if isinstance(t, str) and t in named:
        return named[t]
    if isinstance(t, str) and "." in t and t.rsplit(".", 1)[1] in named:
        return named[t.rsplit(".", 1)[1]]
    return t


def _register(t: dict, named: dict) -> None:
    if isinstance(t, dict) and t.get("type") in ("record", "enum", "fixed") and "name" in t:
        short = t["name"].rsplit(".", 1)[-1]
        named[short] = t
        ns = t.get("namespace")
        if ns:
            named[f"{ns}.{short}"] = t


PRIMITIVES = {
    "string": "String",
    "int": "Int32",
    "long": "Int64",
    "boolean": "Bool",
    "float": "Float32",
    "double": "Float64",
    "bytes": "String",
}


def avro_to_ch(t, named: dict | None = None) -> CHType:
    """ClickHouse type of an Avro type (a record is only valid inside an array)."""
    named = {} if named is None else named
    t = _named(t, named)
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        if len(branches) != 1:
            raise MappingError(f"union {t!r}: only [\"null\", T] is supported")
        inner = avro_to_ch(branches[0], named)
        return inner.as_nullable() if "null" in t else inner
    if isinstance(t, str):
        if t in PRIMITIVES:
            return CHType(PRIMITIVES[t])
        raise MappingError(f"unknown Avro type {t!r}")
    if not isinstance(t, dict):
        raise MappingError(f"bad Avro type {t!r}")
    _register(t, named)
    kind = t.get("type")
    logical = t.get("logicalType")
    if kind == "long" and logical in ("timestamp-millis", "local-timestamp-millis"):
        return CHType("DateTime64(3, 'UTC')", timestamp=True)
    if kind == "long" and logical in ("timestamp-micros",):
        raise MappingError("timestamp-micros is not used by the contract")
    if kind == "int" and logical == "date":
        return CHType("Date32")
    if isinstance(kind, str) and kind in PRIMITIVES:
        return CHType(PRIMITIVES[kind])
    if kind == "enum":
        return CHType("String", low_cardinality=True)
    if kind == "fixed":
        return CHType(f"FixedString({int(t['size'])})")
    if kind == "array":
        item_t = _named(t["items"], named)
        if isinstance(item_t, dict) and item_t.get("type") == "record":
            _register(item_t, named)
            parts = []
            for f in item_t["fields"]:
                parts.append(f"{f['name']} {avro_to_ch(f['type'], named).sql()}")
            return CHType(f"Array(Tuple({', '.join(parts)}))", container=True)
        return CHType(f"Array({avro_to_ch(item_t, named).sql()})", container=True)
    if kind == "map":
        return CHType(f"Map(String, {avro_to_ch(t['values'], named).sql()})", container=True)
    if kind == "record":
        raise MappingError("a nested record is flattened by the table builder, not mapped to one column")
    if isinstance(kind, (dict, list)):
        return avro_to_ch(kind, named)
    raise MappingError(f"unsupported Avro type {t!r}")


# ---------------------------------------------------------------------------------
# Columns and tables
# ---------------------------------------------------------------------------------

@dataclass
class Column:
    name: str
    type: CHType
    #: how to read the value from an event dict: ("field", name) | ("nested", rec, sub)
    #: | ("items", name, (subfield, ...)) | ("pii", name) | ("event_type",) | ("meta", name)
    source: tuple = ()

    def sql(self) -> str:
        return f"`{self.name}` {self.type.sql()}"


@dataclass
class Table:
    name: str
    topic: str
    event_types: tuple[str, ...]
    columns: list[Column]
    #: per event type: the field names (in the schema) it carries
    type_fields: dict[str, set[str]] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def create_sql(self, database: str | None = None) -> str:
        cols = ",\n  ".join(c.sql() for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {qualify(self.name, database)} (\n  {cols}\n)\n"
            "ENGINE = ReplacingMergeTree\nORDER BY (_partition, _offset)"
        )


def qualify(name: str, database: str | None) -> str:
    return f"`{database}`.`{name}`" if database else f"`{name}`"


def table_name(topic: str) -> str:
    return topic.replace(".", "_").replace("-", "_")


def _columns_of(schema: dict, named: dict) -> list[Column]:
    """Columns for one record schema, in field order (nested records flattened)."""
    _register(schema, named)
    cols: list[Column] = []
    for f in schema["fields"]:
        name, ftype = f["name"], f["type"]
        resolved = _named(ftype, named)
        optional = False
        if isinstance(resolved, list) and "null" in resolved:
            branches = [b for b in resolved if b != "null"]
            if len(branches) == 1:
                optional = True
                resolved = _named(branches[0], named)
        if isinstance(resolved, dict) and resolved.get("type") == "record":
            _register(resolved, named)
            for sub in resolved["fields"]:
                ct = avro_to_ch(sub["type"], named)
                if optional:
                    ct = ct.as_nullable()
                cols.append(Column(f"{name}_{sub['name']}", ct, ("nested", name, sub["name"])))
            continue
        if name in PII_FIELDS:
            ct = avro_to_ch(ftype, named)
            if ct.base != "String":
                raise MappingError(f"PII field {name} must be a string")
            cols.append(Column(name + PII_SUFFIX, CHType("String", nullable=ct.nullable), ("pii", name)))
            continue
        ct = avro_to_ch(ftype, named)
        src: tuple = ("field", name)
        if isinstance(resolved, dict) and resolved.get("type") == "array":
            item_t = _named(resolved["items"], named)
            if isinstance(item_t, dict) and item_t.get("type") == "record":
                src = ("items", name, tuple(sf["name"] for sf in item_t["fields"]))
        cols.append(Column(name, ct, src))
    return cols


def build_table(topic: str, event_types: tuple[str, ...], schemas: dict[str, dict]) -> Table:
    """The table of one topic: union of its event types' columns + metadata."""
    merged: dict[str, Column] = {}
    order: list[str] = []
    present: dict[str, int] = {}
    type_fields: dict[str, set[str]] = {}
    for et in event_types:
        if et not in schemas:
            raise MappingError(f"topic {topic}: no schema for event type {et}")
        cols = _columns_of(schemas[et], {})
        type_fields[et] = {c.name for c in cols}
        for c in cols:
            if c.name in merged:
                old = merged[c.name]
                if (old.type.base, old.type.low_cardinality, old.type.container) != (
                        c.type.base, c.type.low_cardinality, c.type.container):
                    raise MappingError(
                        f"topic {topic}: field {c.name} is {old.type.sql()} in one event type "
                        f"and {c.type.sql()} in another")
                if old.source != c.source:
                    raise MappingError(f"topic {topic}: column {c.name} has two different sources")
                if c.type.nullable and not old.type.nullable:
                    merged[c.name] = Column(c.name, old.type.as_nullable(), old.source)
            else:
                merged[c.name] = c
                order.append(c.name)
            present[c.name] = present.get(c.name, 0) + 1
    columns = [Column("event_type", CHType("String", low_cardinality=True), ("event_type",))]
    for name in order:
        c = merged[name]
        if present[name] < len(event_types):
            c = Column(c.name, c.type.as_nullable(), c.source)
        columns.append(c)
    reserved = {m for m, _ in META_COLUMNS} | {"event_type"}
    clash = reserved & set(order)
    if clash:
        raise MappingError(f"topic {topic}: fields {sorted(clash)} collide with reserved columns")
    for name, typ in META_COLUMNS:
        columns.append(Column(name, _parse_meta_type(typ), ("meta", name)))
    return Table(table_name(topic), topic, tuple(event_types), columns, type_fields)


def _parse_meta_type(typ: str) -> CHType:
    if typ.startswith("LowCardinality("):
        return CHType(typ[len("LowCardinality("):-1], low_cardinality=True)
    return CHType(typ, timestamp=typ.startswith("DateTime64"))


# ---------------------------------------------------------------------------------
# Sources of truth: schemas and topic catalog
# ---------------------------------------------------------------------------------

def load_schemas(directory: str | Path | None = None) -> dict[str, dict]:
    """Current schema of every record: ``schemas/<Name>.avsc`` (history/ ignored)."""
    if directory is None:
        try:
            from telbus import config  # the lead's settings: TELBUS_SCHEMAS_DIR
            directory = config.schemas_dir()
        except Exception:  # pragma: no cover - foundation absent
            directory = SCHEMAS_DIR
    out = {}
    for path in sorted(Path(directory).glob("*.avsc")):
        out[path.stem] = json.loads(path.read_text())
    return out


def contract_topics() -> dict[str, tuple[str, ...]]:
    """Topic -> event types for every input and output topic (no DLQs, no schema topic)."""
    try:
        from topics import catalog as topic_catalog
        topics = {t.name: tuple(t.events) for t in topic_catalog.contract_topics()}
        if topics:
            return topics
    except Exception:  # pragma: no cover - catalog absent or broken: keep working
        pass
    return dict(_FALLBACK_TOPICS)


def build_tables(schemas: dict[str, dict] | None = None,
                 topics: dict[str, tuple[str, ...]] | None = None) -> dict[str, Table]:
    """Table for every topic, keyed by topic name."""
    schemas = load_schemas() if schemas is None else schemas
    topics = contract_topics() if topics is None else topics
    return {topic: build_table(topic, tuple(ets), schemas) for topic, ets in topics.items()}


@lru_cache(maxsize=None)
def default_tables() -> dict[str, Table]:
    return build_tables()
