"""Export full / --since (pure, no broker)."""
import csv
import io
import json

import pytest

from processors.subscriptions import export

T0 = 1_790_000_000_000


def state(sid, version, products=(), t=None):
    return {"event_type": "SubscriptionState", "subscriber_id": sid, "msisdn": "138" + sid.rjust(8, "0"),
            "status": "ACTIVE", "plan_id": "PLAN-A", "payment_type": "PREPAID", "broadband_account": None,
            "broadband_type": "NONE", "products": sorted(products), "version": version,
            "updated_at": T0 + version * 1000 if t is None else t}


class Topic:
    """A toy compacted topic: records per partition, keys hashed deterministically."""

    def __init__(self, partitions=3):
        self.parts = {p: [] for p in range(partitions)}

    def produce(self, value):
        p = sum(map(ord, value["subscriber_id"])) % len(self.parts)
        self.parts[p].append(value)

    def records(self):
        for p, recs in self.parts.items():
            for o, v in enumerate(recs):
                yield {"partition": p, "offset": o, "key": v["subscriber_id"], "value": v}

    def end_offsets(self):
        return {p: len(r) for p, r in self.parts.items()}

    def compact(self):
        """Drop superseded records but keep offsets (as Kafka does): return filtered records."""
        latest = {}
        for r in self.records():
            latest[r["key"]] = (r["partition"], r["offset"])
        return [r for r in self.records() if latest[r["key"]] == (r["partition"], r["offset"])]


def test_full_export_takes_latest_per_subscriber_sorted():
    t = Topic()
    for v in [state("B", 1), state("A", 1), state("B", 2, ["P1"]), state("C", 1)]:
        t.produce(v)
    res = export.export_states(t.records(), end_offsets=t.end_offsets())
    assert [(r["subscriber_id"], r["version"]) for r in res.rows] == [("A", 1), ("B", 2), ("C", 1)]
    assert res.offsets == t.end_offsets()
    assert export.parse_since(res.cursor) == {"offsets": t.end_offsets()}


def test_full_plus_incremental_equals_later_full_even_after_compaction():
    t = Topic()
    for v in [state("A", 1), state("B", 1), state("C", 1), state("A", 2, ["X"])]:
        t.produce(v)
    full1 = export.export_states(t.records(), end_offsets=t.end_offsets())
    for v in [state("B", 2, ["Y"]), state("D", 1), state("B", 3, ["Y", "Z"]), state("A", 3)]:
        t.produce(v)
    inc = export.export_states(t.compact(), since=full1.cursor, end_offsets=t.end_offsets())
    assert [(r["subscriber_id"], r["version"]) for r in inc.rows] == [("A", 3), ("B", 3), ("D", 1)]
    full2 = export.export_states(t.compact(), end_offsets=t.end_offsets())
    assert export.to_jsonl(export.merge(full1.rows, inc.rows)) == export.to_jsonl(full2.rows)
    assert inc.offsets == full2.offsets
    # chaining: nothing new since the incremental's own cursor
    assert export.export_states(t.records(), since=inc.cursor, end_offsets=t.end_offsets()).rows == []


def test_records_past_end_offsets_are_ignored():
    t = Topic(partitions=1)
    for v in [state("A", 1), state("A", 2)]:
        t.produce(v)
    res = export.export_states(t.records(), end_offsets={0: 1})
    assert [r["version"] for r in res.rows] == [1] and res.cursor == "offsets:0=1"


def test_since_time():
    t = Topic()
    for v in [state("A", 1), state("B", 1), state("B", 2), state("C", 5)]:
        t.produce(v)
    iso = "2026-09-21T14:13:22.000Z"  # T0 + 2000
    for since in (iso, str(T0 + 2000), "2026-09-21T22:13:22+08:00"):
        res = export.export_states(t.records(), since=since)
        assert [r["subscriber_id"] for r in res.rows] == ["B", "C"]


def test_parse_since_errors():
    for bad in ("offsets:0=x", "offsets:0", "yesterday", "2026-09-21T13:33:22"):
        with pytest.raises(export.CursorError):
            export.parse_since(bad)


def test_tombstones():
    recs = [{"partition": 0, "offset": 0, "key": "A", "value": state("A", 1)},
            {"partition": 0, "offset": 1, "key": "B", "value": state("B", 1)},
            {"partition": 0, "offset": 2, "key": "A", "value": None}]
    assert [r["subscriber_id"] for r in export.export_states(recs).rows] == ["B"]
    inc = export.export_states(recs, since="offsets:0=2")
    assert inc.rows == [] and inc.deleted == ["A"]


def test_jsonl_and_csv_formats():
    rows = [state("A", 2, ["P2", "P1"]), dict(state("B", 1), broadband_account="bb,1", broadband_type="E6")]
    lines = export.render(rows, "jsonl").splitlines()
    a = json.loads(lines[0])
    assert a["event_type"] == "SubscriptionState" and a["products"] == ["P1", "P2"]
    assert a["updated_at"] == "2026-09-21T14:13:22.000Z" and a["broadband_account"] is None
    table = list(csv.DictReader(io.StringIO(export.render(rows, "csv"))))
    assert table[0]["products"] == "P1;P2" and table[0]["broadband_account"] == ""
    assert table[1]["broadband_account"] == "bb,1" and table[1]["version"] == "1"
    with pytest.raises(ValueError):
        export.render(rows, "xml")
