"""``telbus replay`` against a real broker: ranges, digests, time ranges, republishing."""
from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import NewTopic

from telbus import codec, kafka
from tests.helpers import cli, read_topic, unique

T0 = 1_790_000_000_000  # fixed record timestamps (epoch ms) so time ranges are exact


def login(i: int) -> dict:
    return {"event_type": "Login", "event_id": f"e{i}", "event_time": T0 + i * 1000, "source": "TEST",
            "login_id": f"l{i}", "account": f"acct{i % 5}", "account_type": "BROADBAND",
            "client": "EHOME_CLIENT", "result": "SUCCESS" if i % 3 else "BAD_PASSWORD",
            "source_ip": f"10.0.0.{i % 7}", "province": "GD"}


def make_topic(partitions: int) -> str:
    name = unique("replay.test.")
    admin = kafka.admin()  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def fill(topic: str, n: int, partitions: int, bad_at: int | None = None) -> None:
    """n records spread round-robin over partitions, timestamps T0 + i s, a header each."""
    p = kafka.producer()
    for i in range(n):
        value = b"\xc3\x01garbage" if i == bad_at else codec.encode(login(i))
        p.produce(topic, value, f"acct{i % 5}".encode(), partition=i % partitions, timestamp=T0 + i * 1000,
                  headers=[("trace", f"t{i}".encode()), ("empty", None)])
    assert p.flush(30) == 0


def evidence(res) -> dict:
    lines = [l for l in res.stderr.splitlines() if l.startswith("{")]
    assert lines, res.stderr
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def src(broker):
    topic = make_topic(3)
    fill(topic, 30, 3, bad_at=4)
    return topic


def test_same_range_twice_same_digest_and_canonical_order(src, tmp_path):
    a = cli("replay", src, "--from-offset", "earliest", "--out", tmp_path / "a.jsonl", check=True)
    b = cli("replay", src, "--from-offset", "0", "--format", "raw", check=True)
    ea, eb = evidence(a), evidence(b)
    assert ea["records"] == eb["records"] == 30
    assert ea["sha256"] == eb["sha256"]                       # same range, any format -> same digest
    assert [p["sha256"] for p in ea["partitions"]] == [p["sha256"] for p in eb["partitions"]]
    assert ea["complete"] and ea["undecodable"] == 1
    rows = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(r["partition"], r["offset"]) for r in rows] == sorted((r["partition"], r["offset"]) for r in rows)
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["value_hex"].startswith("c301")   # printed, never skipped
    good = rows[0]
    assert good["value"]["event_type"] == "Login" and good["headers"]["trace"].startswith("t")
    raw = [json.loads(l) for l in b.stdout.splitlines()]
    assert raw[0]["key_b64"] and raw[0]["value_b64"] and raw[0]["headers"][0][0] == "trace"
    # a sub-range has a different digest, and exactly the asked range
    c = cli("replay", src, "--from-offset", "1:2", "--to-offset", "1:5", check=True)
    ec = evidence(c)
    assert ec["records"] == 4 and [p["partition"] for p in ec["partitions"]] == [1]
    assert ec["partitions"][0]["first_offset"] == 2 and ec["partitions"][0]["last_offset"] == 5
    assert ec["sha256"] != ea["sha256"]
    assert [json.loads(l)["offset"] for l in c.stdout.splitlines()] == [2, 3, 4, 5]


def test_from_time_and_to_time(src):
    # records i = 12..20 have timestamps T0+12s .. T0+20s
    res = cli("replay", src, "--from-time", str(T0 + 12_000), "--to-time",
              str(T0 + 20_000), check=True)
    ev = evidence(res)
    rows = [json.loads(l) for l in res.stdout.splitlines()]
    assert sorted(r["value"]["login_id"] for r in rows) == sorted(f"l{i}" for i in range(12, 21))
    assert ev["records"] == 9 and ev["complete"]
    # ISO-8601 with an offset means the same instant
    from telbus.jsonform import format_time

    iso = format_time(T0 + 12_000).replace("Z", "+00:00")
    res2 = cli("replay", src, "--from-time", iso, "--to-time", str(T0 + 20_000), check=True)
    assert evidence(res2)["sha256"] == ev["sha256"]
    # a start after every record: empty range, returns at once
    res3 = cli("replay", src, "--from-time", str(T0 + 10**9), check=True)
    assert evidence(res3)["records"] == 0 and res3.stdout == ""


def test_into_preserves_key_timestamp_headers_and_partition(src, broker):
    dst = make_topic(3)
    res = cli("replay", src, "--from-offset", "0", "--into", dst, "--quiet", check=True)
    ev = evidence(res)
    assert ev["into"]["produced"] == 30 and ev["into"]["same_partition"]
    back = cli("replay", dst, "--from-offset", "0", "--format", "raw", check=True)
    orig = cli("replay", src, "--from-offset", "0", "--format", "raw", check=True)

    def strip(line):
        r = json.loads(line)
        r.pop("topic")
        return r

    assert [strip(l) for l in back.stdout.splitlines()] == [strip(l) for l in orig.stdout.splitlines()]
    assert len(read_topic(dst, decode=False)) == 30


def test_into_source_is_refused(src):
    res = cli("replay", src, "--from-offset", "0", "--into", src)
    assert res.returncode == 2 and "refusing" in res.stderr


def test_errors_are_clear_and_fast(src):
    res = cli("replay", "no.such.topic." + unique(), "--from-offset", "0", timeout=60)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = cli("replay", src, "--from-offset", "9:0", timeout=60)
    assert res.returncode == 2 and "no partition" in res.stderr
    res = cli("replay", src, "--from-offset", "0", "--into", "no.such." + unique(), timeout=60)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_does_not_join_a_group_or_commit(src, broker):
    cli("replay", src, "--from-offset", "0", "--quiet", check=True)
    groups = kafka.admin().list_consumer_groups().result(30)
    assert not [g for g in groups.valid if g.group_id == "telbus-anon"]
