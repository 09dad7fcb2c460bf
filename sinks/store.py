"""The analytical store: one clickhouse-connect client, embedded chDB or a server.

``TELBUS_CLICKHOUSE_DSN``:

- ``chdb:///absolute/path`` (default ``chdb://<data dir>/clickhouse``): chDB in this
  process. chDB lets one process open a path at a time; while the sink runs it owns the
  store and serves read-only SQL (:mod:`sinks.queryserver`).
- ``http(s)://user:pass@host:8123/db``: a ClickHouse server. Same code path: both are
  ``clickhouse_connect.get_client(dsn=...)`` clients.

Exactly-once effect, why ``ReplacingMergeTree ORDER BY (_partition, _offset)``: one table
holds one topic, so (partition, offset) identifies a Kafka record. The sink commits
offsets only after an insert, so a crash in between re-delivers records; the sink's offset
fence (max stored offset per partition, read at assignment) skips them, and should a
duplicate still get in (two sinks during a rebalance on a server store) the replacing
engine collapses rows with the same key at merge time and ``SELECT ... FINAL`` shows
each Kafka record exactly once at query time. Insert deduplication tokens were not chosen:
they only help when a retried insert has exactly the same block boundaries (a restarted
consumer batches differently), and need Replicated tables or a non-replicated dedup
window on a server.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect

from sinks import migrations
from sinks.ddl import Table, default_tables

log = logging.getLogger("telbus.sink.store")

#: Settings applied to every insert: the client sends ~2 MB blocks; the engine squashes
#: them into ONE block, hence one part, per INSERT (so a crash leaves a prefix, never a
#: hole). Batches are bounded far below these limits (TELBUS_SINK_BATCH_ROWS).
INSERT_SETTINGS = {
    "max_insert_block_size": 10_000_000,
    "min_insert_block_size_rows": 10_000_000,
    "min_insert_block_size_bytes": 8 << 30,
}


def _data_dir() -> Path:
    try:
        from telbus import config
        return config.data_dir()
    except Exception:  # pragma: no cover - foundation absent
        root = Path(__file__).resolve().parents[1]
        return Path(os.environ.get("TELBUS_DATA_DIR") or root / ".data").resolve()


def default_dsn() -> str:
    value = os.environ.get("TELBUS_CLICKHOUSE_DSN")
    if value:
        return value
    return f"chdb://{_data_dir() / 'clickhouse'}"


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def redact_dsn(dsn: str) -> str:
    p = urlparse(dsn)
    if p.password:
        return dsn.replace(f":{p.password}@", ":***@", 1)
    return dsn


class StoreBusy(RuntimeError):
    """The embedded store is open in another process (chDB: one process per path)."""


def connect(dsn: str | None = None, **settings):
    """A clickhouse-connect client for the DSN (database created if the DSN names one)."""
    dsn = dsn or default_dsn()
    if is_embedded(dsn):
        path = urlparse(dsn).path
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=dsn, settings=settings or None)
        except Exception as exc:
            if "EmbeddedServer" in str(exc) or "already" in str(exc).lower():
                raise StoreBusy(f"the store {path} is open in another process ({exc})") from exc
            raise
    p = urlparse(dsn)
    database = p.path.strip("/") or None
    if database and database != "default":
        bootstrap = clickhouse_connect.get_client(dsn=p._replace(path="/default").geturl())
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        bootstrap.close()
    return clickhouse_connect.get_client(dsn=dsn, settings=settings or None)


class Store:
    """Tables, migrations, inserts and the offset fence over one client."""

    def __init__(self, dsn: str | None = None, tables: dict[str, Table] | None = None,
                 client=None, migrate: bool = True):
        self.dsn = dsn or default_dsn()
        self.tables = tables if tables is not None else default_tables()
        self.client = client if client is not None else connect(self.dsn)
        self.migration_log: list[str] = []
        if migrate:
            self.migration_log = migrations.migrate(self.client, self.tables)
            for line in self.migration_log:
                log.info("store %s: %s", redact_dsn(self.dsn), line)

    @property
    def embedded(self) -> bool:
        return is_embedded(self.dsn)

    def insert(self, table: Table, columns: list[list]) -> None:
        """One columnar insert; returns when the server/engine has written the part."""
        self.client.insert(
            table.name, columns, column_names=table.column_names,
            column_type_names=[c.type.sql() for c in table.columns],
            column_oriented=True, settings=INSERT_SETTINGS,
        )

    def fence(self, table: Table) -> dict[int, int]:
        """Highest stored offset per partition of the table's topic."""
        rows = self.client.query(
            f"SELECT _partition, max(_offset) FROM `{table.name}` GROUP BY _partition").result_rows
        return {int(p): int(o) for p, o in rows}

    def save_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record the next offset to read per (topic, partition), after a durable insert."""
        if not offsets:
            return
        items = sorted(offsets.items())
        self.client.insert(migrations.OFFSETS_TABLE,
                           [[t for (t, _), _ in items], [p for (_, p), _ in items], [o for _, o in items]],
                           column_names=["topic", "partition", "next_offset"],
                           column_type_names=["String", "Int32", "Int64"], column_oriented=True)

    def load_offsets(self, topic: str | None = None) -> dict[tuple[str, int], int]:
        where = "" if topic is None else " WHERE topic = {t:String}"
        rows = self.client.query(
            f"SELECT topic, partition, max(next_offset) FROM {migrations.OFFSETS_TABLE}{where} "
            "GROUP BY topic, partition", parameters={"t": topic} if topic else None).result_rows
        return {(t, int(p)): int(o) for t, p, o in rows}

    def count(self, table: Table, final: bool = True) -> int:
        return int(self.client.query(
            f"SELECT count() FROM `{table.name}`{' FINAL' if final else ''}").result_rows[0][0])

    def ping(self) -> bool:
        try:
            self.client.query("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pragma: no cover
            pass


def open_store(dsn: str | None = None, retries: int = 0, delay_s: float = 0.5, **kw) -> Store:
    """Open a store, retrying ``StoreBusy`` briefly (a previous owner is exiting)."""
    for attempt in range(retries + 1):
        try:
            return Store(dsn, **kw)
        except StoreBusy:
            if attempt >= retries:
                raise
            time.sleep(delay_s)
    raise AssertionError("unreachable")
