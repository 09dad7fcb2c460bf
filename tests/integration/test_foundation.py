"""Issue 2 against a real broker: the CLI, both framings, plain Kafka on the wire, topics."""
import io
import json
import shutil
import subprocess

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

import topics
from telbus import codec, jsonform, kafka
from telbus.schemas import catalog
from tests.helpers import cli, read_topic, unique, wait_until
from tests.samples import SAMPLES

pytestmark = pytest.mark.integration


def normalized(obj) -> str:
    return json.dumps(jsonform.event_to_json(jsonform.event_from_json(obj)), sort_keys=True, ensure_ascii=False)


def consumed_values(topic: str) -> list[dict]:
    """Every record of a topic through ``telbus consume``. Other tests leave deliberately
    undecodable records on shared topics: consume prints those as errors and exits 1."""
    res = cli("consume", topic, "--from-beginning", "--timeout", "3")
    records = [json.loads(line) for line in res.stdout.splitlines()]
    undecodable = [r for r in records if "error" in r]
    assert res.returncode == (1 if undecodable else 0), res.stderr
    return records


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_round_trip_every_event_type_through_produce_and_consume(broker, topic):
    lines = "\n".join(json.dumps(o, ensure_ascii=False) for o in SAMPLES[topic]) + "\n"
    res = cli("produce", topic, "-", input=lines)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stderr.strip().splitlines()[-1])
    assert summary["published"] == len(SAMPLES[topic]) and summary["rejected_lines"] == 0
    records = consumed_values(topic)
    got = {json.dumps(r["value"], sort_keys=True, ensure_ascii=False) for r in records if "value" in r}
    for obj in SAMPLES[topic]:
        assert normalized(obj) in got
    for r in records:
        assert {"partition", "offset", "timestamp", "key"} <= set(r)
        assert r["timestamp"].endswith("Z")


def test_hand_framed_single_object_record_is_decoded_by_consume(broker):
    """Framing written here from the Avro spec with plain fastavro, not through our codec."""
    raw = json.loads((catalog().directory / "Login.avsc").read_text())
    parsed = fastavro.parse_schema(raw)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fp_wire = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    account = unique("acct-")
    datum = {"event_id": unique("E"), "event_time": 1795140000000, "source": "EHOME", "login_id": "L9",
             "account": account, "account_type": "PASSPORT", "client": "TIANYI_LIVE", "result": "SUCCESS",
             "source_ip": "127.0.0.7", "province": "SH", "device_id": None}
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp_wire)
    fastavro.schemaless_writer(buf, parsed, datum)
    p = Producer({"bootstrap.servers": broker})
    p.produce("sec.login.events", buf.getvalue(), account)
    assert p.flush(30) == 0
    mine = [r for r in consumed_values("sec.login.events") if r.get("key") == account]
    assert len(mine) == 1 and "error" not in mine[0]
    assert mine[0]["value"]["account"] == account
    assert mine[0]["value"]["event_time"] == "2026-11-20T02:00:00.000Z"


def test_confluent_framed_record_from_confluents_serializer(broker):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    registry = SchemaRegistryClient.new_client({"url": "mock://telbus-test"})
    sv = catalog().current("Alarm")
    ser = AvroSerializer(registry, sv.json)
    site = unique("SITE-")
    datum = {"event_id": unique("E"), "event_time": 1795140000000, "source": "NMS-ZTE", "alarm_id": "A1",
             "ne_id": "OLT-9", "site_id": site, "probable_cause": "POWER", "severity": "CRITICAL", "text": None}
    data = ser(datum, SerializationContext("oss.alarm.raw", MessageField.VALUE))
    assert data[0] == 0  # Confluent wire format
    p = Producer({"bootstrap.servers": broker})
    p.produce("oss.alarm.raw", data, site)
    assert p.flush(30) == 0
    [(_, _, _, raw)] = read_topic("oss.alarm.raw", decode=False, predicate=lambda k, v: k == site)
    ours = codec.Codec(registry_client=registry)
    event = ours.decode(raw)
    assert event["event_type"] == "Alarm" and event["site_id"] == site and event["event_time"] == 1795140000000
    # And the other way: our Confluent-mode bytes read by Confluent's deserializer.
    back = ours.encode(event)
    assert back[0] == 0
    des = AvroDeserializer(registry)
    again = des(back, SerializationContext("oss.alarm.raw", MessageField.VALUE))
    assert again["site_id"] == site and again["severity"] == "CRITICAL"
    # A single-object-mode codec still decodes it when it knows the registry: both framings accepted.
    assert ours.decode(codec.Codec().encode(event))["site_id"] == site


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package) not installed")
def test_kcat_reads_plain_kafka_records(broker):
    obj = dict(SAMPLES["net.cdr.raw"][0], cdr_id=unique("C"), subscriber_id=unique("S"))
    event = jsonform.event_from_json(obj)
    value = codec.encode(event)
    delivered = {}
    p = kafka.producer()
    p.produce("net.cdr.raw", value, obj["subscriber_id"],
              on_delivery=lambda err, msg: delivered.update(err=err, p=msg.partition(), o=msg.offset()))
    assert p.flush(30) == 0 and delivered["err"] is None
    out = subprocess.run(["kcat", "-b", broker, "-C", "-t", "net.cdr.raw", "-p", str(delivered["p"]),
                          "-o", str(delivered["o"]), "-c", "1", "-e", "-q", "-f", "%k|%s"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key, _, raw = out.stdout.partition(b"|")
    assert key.decode() == obj["subscriber_id"]
    assert raw == value and raw[:2] == b"\xc3\x01"


def test_bad_lines_are_reported_and_nothing_partial_is_published(broker):
    sub = unique("S")
    good = [dict(SAMPLES["bss.subscriber.events"][1], event_id=unique("E"), subscriber_id=sub) for _ in range(3)]
    lines = [
        json.dumps(good[0]),
        "{not json",                                                          # 2
        json.dumps({k: v for k, v in good[1].items() if k != "plan_id"}),     # 3 missing field
        json.dumps(dict(good[1], plan_id=42)),                                # 4 mistyped
        json.dumps(dict(good[1], event_type="Teleport")),                     # 5 unknown type
        json.dumps(dict(SAMPLES["net.cdr.raw"][0], subscriber_id=sub)),       # 6 wrong topic
        json.dumps(dict(SAMPLES["bss.subscriber.events"][2], subscriber_id=sub, status="ASLEEP")),  # 7 enum
        json.dumps(good[1]),
        "",
        json.dumps(good[2]),
    ]
    res = cli("produce", "bss.subscriber.events", "-", input="\n".join(lines) + "\n")
    assert res.returncode == 1
    err = res.stderr
    assert "line 2: not JSON" in err
    assert "line 3: PlanChanged.plan_id: missing required field" in err
    assert "line 4: PlanChanged.plan_id: expected string, got 42" in err
    assert "line 5: unknown event_type 'Teleport'" in err
    assert "line 6: event_type Cdr does not belong on this topic" in err
    assert "line 7: StatusChanged.status: 'ASLEEP' is not one of" in err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary == {"topic": "bss.subscriber.events", "published": 3, "rejected_lines": 6, "failed": 0}
    mine = read_topic("bss.subscriber.events", predicate=lambda k, v: k == sub)
    assert sorted(v["event_id"] for *_, v in mine) == sorted(g["event_id"] for g in good)


def test_topics_apply_twice_is_a_no_op(broker):
    first = cli("topics", "apply")
    assert first.returncode == 0, first.stdout + first.stderr
    second = cli("topics", "apply")
    assert second.returncode == 0
    rows = [line for line in second.stdout.splitlines() if not line.startswith("published")]
    assert len(rows) == len(topics.catalog())
    assert all(r.startswith("ok ") for r in rows), rows
    listed = cli("topics", "list")
    assert listed.returncode == 0 and "net.cdr.raw" in listed.stdout


def test_wrong_partition_count_is_reported_as_drift_and_not_touched(broker):
    name = unique("drift.test.")
    admin = kafka.admin()
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    spec = {name: topics.Topic(name, "k", 3, (), "input", {"cleanup.policy": "compact"})}
    wait_until(lambda: name in admin.list_topics(timeout=5).topics, 30, what="topic visible")
    [report] = topics.inspect(admin, create=True, specs=spec)
    assert report.status == "drift"
    assert "partitions: catalog 3, cluster 2" in report.details
    assert "cleanup.policy: catalog compact, cluster delete" in report.details
    assert len(admin.list_topics(name, timeout=5).topics[name].partitions) == 2


def test_schemas_topic_resolves_every_fingerprint(broker):
    recs = read_topic(topics.SCHEMAS_TOPIC, decode=False)
    published = {k: v for _, _, k, v in recs}
    for sv in catalog().all_versions():
        assert json.loads(published[sv.fingerprint_hex]) == json.loads(sv.json)


def test_status_reports_the_broker(broker):
    res = cli("status")
    assert res.returncode == 0
    st = json.loads(res.stdout)
    assert st["bootstrap_servers"] == broker and st["kafka"]["reachable"] is True
