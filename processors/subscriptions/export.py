"""``telbus export subscriptions --full | --since CURSOR_OR_TIME`` (pure part).

Input: the records of the compacted topic ``bss.subscription.state`` as read by the
export reader, each ``{"partition", "offset", "key", "value"}`` with ``value`` the decoded
SubscriptionState dict (``None`` for a tombstone), plus optionally the end offsets the
reader stopped at.  Output: one row per subscriber (its latest SubscriptionState),
sorted by subscriber_id, written as JSON lines or CSV, and a cursor.

**Cursor (the "VERSION" of ``--since``).**  An export covers, per partition, every record
with offset < its end offset.  The cursor names those end offsets exactly:
``offsets:0=120,1=97,2=0`` (partition=next offset, partitions ascending).  Every export
(full or incremental) produces the cursor at which it stopped.

* ``--full``: for each key the record with the highest offset below the end offsets.
* ``--since offsets:...``: for each key the record with the highest offset among those at
  or after the cursor's offset of its partition (a partition missing from the cursor is
  read from 0).  Only subscribers that changed after the cursor appear.

Consistency guarantee: ``merge(full@X, since X@Y) == full@Y`` (rows keyed by
subscriber_id, incremental rows replace full rows).  It holds under compaction, because
compaction only removes records that a later record of the same key supersedes.

* ``--since TIME`` (ISO-8601 with offset or ``Z``, or integer epoch milliseconds):
  subscribers whose latest state has ``updated_at >= TIME``.  ``updated_at`` never goes
  backwards per subscriber, so this returns every subscriber whose latest state was
  caused at or after TIME; it is a convenience for people, not an exact sync cursor
  (a change can be published after a later-timed change of another subscriber).
  Systems that sync by file should chain offset cursors.

Tombstones: the processor never writes them.  If one is met, the key is dropped from a
full export; an incremental export cannot express a deletion in a SubscriptionState row
and lists such keys in ``ExportResult.deleted`` (the CLI reports them on stderr).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime

from processors.subscriptions.state import STATE_FIELDS
from processors.subscriptions.views import iso_utc

CURSOR_PREFIX = "offsets:"


class CursorError(ValueError):
    pass


def format_cursor(offsets: dict) -> str:
    return CURSOR_PREFIX + ",".join(f"{p}={offsets[p]}" for p in sorted(offsets))


def parse_since(text: str) -> dict:
    """``{"offsets": {partition: offset}}`` or ``{"time": epoch_ms}``."""
    s = str(text).strip()
    if s.startswith(CURSOR_PREFIX):
        offs = {}
        body = s[len(CURSOR_PREFIX):]
        for part in filter(None, body.split(",")):
            try:
                p, o = part.split("=")
                p, o = int(p), int(o)
            except ValueError:
                raise CursorError(f"bad cursor element {part!r} in {s!r} (want partition=offset)") from None
            if p < 0 or o < 0:
                raise CursorError(f"negative partition/offset in cursor {s!r}")
            offs[p] = o
        return {"offsets": offs}
    if s.lstrip("-").isdigit():
        return {"time": int(s)}
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise CursorError(f"--since {s!r}: neither a cursor (offsets:P=O,...) nor a time "
                          f"(ISO-8601 with offset, or epoch millis)") from None
    if dt.tzinfo is None:
        raise CursorError(f"--since {s!r}: time needs an offset or Z")
    return {"time": int(dt.timestamp() * 1000)}


@dataclass
class ExportResult:
    rows: list = field(default_factory=list)       # SubscriptionState dicts, sorted by subscriber_id
    offsets: dict = field(default_factory=dict)    # partition -> next offset (the cursor)
    deleted: list = field(default_factory=list)    # tombstoned keys (incremental only)

    @property
    def cursor(self) -> str:
        return format_cursor(self.offsets)


def export_states(records, since: dict | str | None = None, end_offsets: dict | None = None) -> ExportResult:
    """Full export (``since=None``) or incremental (``since`` from :func:`parse_since`)."""
    if isinstance(since, str):
        since = parse_since(since)
    start = (since or {}).get("offsets") or {}
    min_time = (since or {}).get("time")
    nxt = dict(start)
    if end_offsets:
        for p, o in end_offsets.items():
            nxt[p] = max(nxt.get(p, 0), o)
    latest: dict = {}
    for r in records:
        p, o = r["partition"], r["offset"]
        if end_offsets is not None and o >= end_offsets.get(p, 0):
            continue
        nxt[p] = max(nxt.get(p, 0), o + 1)
        if o < start.get(p, 0):
            continue
        v = r.get("value")
        key = r.get("key") or (v or {}).get("subscriber_id")
        if key is None:
            continue
        prev = latest.get(key)
        if prev is None or (o > prev[1] if prev[0] == p else _newer(v, prev[2])):
            latest[key] = (p, o, v)
    res = ExportResult(offsets=nxt)
    incremental = since is not None
    for key in sorted(latest):
        v = latest[key][2]
        if v is None:
            if incremental:
                res.deleted.append(key)
            continue
        if min_time is not None and (v.get("updated_at") or 0) < min_time:
            continue
        res.rows.append(v)
    return res


def _newer(v, old) -> bool:
    """Same key seen in two partitions (topic re-partitioned): the higher version wins."""
    if old is None:
        return True
    if v is None:
        return False
    return v.get("version", 0) > old.get("version", 0)


def merge(base_rows, incremental_rows) -> list:
    """Apply an incremental export onto a full one (what a file-syncing consumer does)."""
    by = {r["subscriber_id"]: r for r in base_rows}
    for r in incremental_rows:
        by[r["subscriber_id"]] = r
    return [by[k] for k in sorted(by)]


def _json_row(v: dict) -> dict:
    row = {"event_type": "SubscriptionState"}
    for f in STATE_FIELDS:
        row[f] = v.get(f)
    row["products"] = sorted(row["products"] or [])
    row["updated_at"] = iso_utc(row["updated_at"])
    return row


def to_jsonl(rows) -> str:
    return "".join(json.dumps(_json_row(v), ensure_ascii=False, separators=(",", ":")) + "\n" for v in rows)


CSV_PRODUCT_SEP = ";"


def to_csv(rows) -> str:
    """CSV with a header; products joined by ';'; absent values empty; times ISO UTC."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATE_FIELDS)
    for v in rows:
        r = _json_row(v)
        w.writerow(["" if r[f] is None else (CSV_PRODUCT_SEP.join(r[f]) if f == "products" else r[f])
                    for f in STATE_FIELDS])
    return buf.getvalue()


def render(rows, fmt: str = "jsonl") -> str:
    if fmt in ("jsonl", "json"):
        return to_jsonl(rows)
    if fmt == "csv":
        return to_csv(rows)
    raise ValueError(f"unknown export format {fmt!r} (jsonl|csv)")
