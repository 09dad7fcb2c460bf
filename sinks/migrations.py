"""Versioned, explicit store migrations, recorded in ``_telbus_migrations``.

Two kinds, both idempotent and both recorded:

- ``explicit``: numbered steps in :data:`MIGRATIONS`, applied once each in order
  (1: the topic tables as the schemas define them; 2: the views). A later change to the
  store is a new numbered step here, never an edit of an applied one (its checksum is
  recorded and a changed applied step is reported).
- ``schema``: after the explicit steps, every topic table is compared with the table the
  *current* schemas derive (sinks.ddl). A field a schema gained (BACKWARD-compatible
  evolution only adds optional fields or fields with defaults) becomes
  ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` — existing rows keep their data and read
  the new column as NULL/default. A column whose type would change, or a field that
  disappeared, is never altered or dropped automatically: :class:`MigrationError` names
  it (a removed field's column simply stays).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from sinks import views
from sinks.ddl import Table

MIGRATIONS_TABLE = "_telbus_migrations"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[dict[str, Table]], list[str]]


def _topic_tables(tables: dict[str, Table]) -> list[str]:
    return [t.create_sql() for t in tables.values()]


def _views(tables: dict[str, Table]) -> list[str]:
    return views.statements()


OFFSETS_TABLE = "_telbus_sink_offsets"


def _offsets(tables: dict[str, Table]) -> list[str]:
    return [f"""CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
  topic String,
  partition Int32,
  next_offset Int64,
  updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(next_offset) ORDER BY (topic, partition)"""]


MIGRATIONS: list[Migration] = [
    Migration(1, "topic tables from the Avro schemas", _topic_tables),
    Migration(2, "views: daily revenue, monthly usage, fraud per day, open incidents, subscription state",
              _views),
    Migration(3, "sink offsets kept in the store (position survives a lost consumer group, "
                 "and a wiped store re-imports)", _offsets),
]


def _checksum(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


def ensure_table(client) -> None:
    client.command(f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
  kind LowCardinality(String),
  version UInt32,
  name String,
  statements String,
  checksum String,
  applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY (kind, version)""")


def applied(client) -> list[dict]:
    ensure_table(client)
    rows = client.query(f"SELECT kind, version, name, checksum, toString(applied_at) "
                        f"FROM {MIGRATIONS_TABLE} ORDER BY applied_at, kind, version").result_rows
    return [dict(zip(("kind", "version", "name", "checksum", "applied_at"), r)) for r in rows]


def _record(client, kind: str, version: int, name: str, statements: list[str]) -> None:
    client.insert(MIGRATIONS_TABLE, [[kind, version, name, "\n;\n".join(statements), _checksum(statements)]],
                  column_names=["kind", "version", "name", "statements", "checksum"])


def existing_columns(client, table: str) -> dict[str, str] | None:
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "ORDER BY position", parameters={"t": table}).result_rows
    return {n: t for n, t in rows} if rows else None


def _norm(type_sql: str) -> str:
    return type_sql.replace(" ", "")


def schema_changes(client, tables: dict[str, Table]) -> list[tuple[str, str, str]]:
    """(table, column, ADD COLUMN statement) for every field the store lacks."""
    out = []
    problems = []
    for t in tables.values():
        have = existing_columns(client, t.name)
        if have is None:
            continue  # created by the explicit step (or missing: next explicit run creates it)
        prev = None
        for c in t.columns:
            if c.name not in have:
                after = f" AFTER `{prev}`" if prev else " FIRST"
                out.append((t.name, c.name,
                            f"ALTER TABLE `{t.name}` ADD COLUMN IF NOT EXISTS {c.sql()}{after}"))
            elif _norm(have[c.name]) != _norm(c.type.sql()):
                problems.append(f"{t.name}.{c.name}: store has {have[c.name]}, schemas derive {c.type.sql()}")
            prev = c.name
    if problems:
        raise MigrationError("incompatible column type change (not migrated automatically): "
                             + "; ".join(problems))
    return out


def migrate(client, tables: dict[str, Table]) -> list[str]:
    """Apply what is missing; return a description of each step applied (empty: up to date)."""
    ensure_table(client)
    done = {(r["kind"], r["version"]): r for r in applied(client)}
    log: list[str] = []
    for m in MIGRATIONS:
        stmts = m.statements(tables)
        rec = done.get(("explicit", m.version))
        if rec is not None:
            if m.version == 1:
                continue  # topic tables evolve through schema steps, not by re-running step 1
            if rec["checksum"] != _checksum(stmts):
                log.append(f"warning: applied migration {m.version} ({m.name}) differs from the code; "
                           "add a new numbered migration instead of editing it")
            continue
        for s in stmts:
            client.command(s)
        _record(client, "explicit", m.version, m.name, stmts)
        log.append(f"migration {m.version}: {m.name}")
    changes = schema_changes(client, tables)
    if changes:
        next_v = 1 + max([v for (k, v) in done if k == "schema"] or [0])
        for table, column, stmt in changes:
            client.command(stmt)
            _record(client, "schema", next_v, f"add column {table}.{column}", [stmt])
            log.append(f"schema {next_v}: add column {table}.{column}")
            next_v += 1
    return log
