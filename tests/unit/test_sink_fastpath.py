"""The engine-parsed Avro fast path stores exactly what the Python path stores."""
from __future__ import annotations

import copy
import json

import pytest

from sinks import avrofast
from sinks.pii import Hasher
from sinks.store import Store
from sinks.writer import Writer
from telbus import codec as tcodec
from telbus import jsonform
from tests.samples import SAMPLES


def _events():
    out = {}
    for topic, samples in SAMPLES.items():
        evs = [jsonform.parse_line(json.dumps(s)) for s in samples]
        # variants: every optional field null / set, negative and large numbers, unicode
        for e in list(evs):
            v = copy.deepcopy(e)
            for k in list(v):
                if k not in ("event_type",) and v[k] is not None and isinstance(v[k], str) and k.endswith("_id") \
                        and k not in ("subscriber_id", "order_id", "cdr_id", "incident_id", "alert_id"):
                    v[k] = v[k] + "-广东"
            evs.append(v)
        out[topic] = evs
    cdr = dict(out["net.cdr.raw"][0], duration_s=None, called_number=None, cell_id=None,
               bytes_up=2**40, bytes_down=0, service="DATA")
    out["net.cdr.raw"].append(cdr)
    inc = dict(out["oss.incidents"][0], change="MERGED", merged_into="INC-X", updated_at=1795140000123,
               root_ne_known=False, flapping=True, alarm_ids=[], affected_services=[])
    out["oss.incidents"].append(inc)
    st = dict(out["bss.subscription.state"][0], msisdn=None, payment_type=None, plan_id=None, products=[])
    out["bss.subscription.state"].append(st)
    fa = dict(out["sec.fraud.alerts"][0], evidence={}, rule="IRSF")
    out["sec.fraud.alerts"].append(fa)
    return out


@pytest.fixture
def store(tmp_path):
    s = Store(f"chdb://{tmp_path / 'ch'}")
    yield s
    s.close()


def test_fast_path_rows_equal_python_path_rows(store):
    codec = tcodec.default_codec()
    w = Writer(store, Hasher(b"k"), codec=codec)
    fast_used = {}
    for topic, events in _events().items():
        for i, e in enumerate(events):
            data = codec.encode(e)
            # path A: decoded in Python (partition 0)
            assert w.add(topic, codec.decode(data), 0, i, 1_700_000_000_000 + i)
            # path B: the sink's way (partition 1): fast path when eligible
            r = w.add_encoded(topic, data, 1, i, 1_700_000_000_000 + i)
            if r is None:
                assert w.add(topic, codec.decode(data), 1, i, 1_700_000_000_000 + i)
            fast_used.setdefault(topic, set()).add(r is not None)
        w.flush()     # mixed batch: fast records go through the Python path here
        for i, e in enumerate(events):
            data = codec.encode(e)
            r = w.add_encoded(topic, data, 2, i, 1_700_000_000_000 + i)
            if r is None:
                assert w.add(topic, codec.decode(data), 2, i, 1_700_000_000_000 + i)
        res = w.flush()  # pure fast batch (for eligible types): FORMAT Avro insert
        assert not res.rejected
    assert fast_used["net.cdr.raw"] == {True}
    assert fast_used["bss.cdr.rated"] == {True}
    assert fast_used["bss.tariff.plans"] == {False}          # nested records: Python path
    assert True not in fast_used["bss.subscriber.events"] or False in fast_used["bss.subscriber.events"]
    for topic, t in store.tables.items():
        cols = ", ".join(f"`{c}`" for c in t.column_names if c != "_partition")
        a = store.client.query(f"SELECT {cols} FROM `{t.name}` WHERE _partition = 0 ORDER BY _offset").result_rows
        b = store.client.query(f"SELECT {cols} FROM `{t.name}` WHERE _partition = 1 ORDER BY _offset").result_rows
        c = store.client.query(f"SELECT {cols} FROM `{t.name}` WHERE _partition = 2 ORDER BY _offset").result_rows
        assert a == b == c, topic
        assert len(a) == len(_events()[topic])


def test_subscriber_created_never_takes_the_fast_path(store):
    w = Writer(store, Hasher(b"k"))
    ev = jsonform.parse_line(json.dumps(SAMPLES["bss.subscriber.events"][0]))
    assert w.add_encoded("bss.subscriber.events", tcodec.encode(ev), 0, 0, 0) is None   # PII is hashed in Python


def test_old_schema_versions_take_the_python_path(store):
    from telbus.schemas import catalog

    w = Writer(store, Hasher(b"k"))
    cat = catalog()
    for name, versions in cat.history.items():
        for sv in versions[:-1]:
            topic = next(t for t, tab in store.tables.items() if name in tab.event_types)
            fake = avrofast.MAGIC + sv.wire_fingerprint + b"\x00"
            assert w.add_encoded(topic, fake, 0, 0, 0) is None


def test_a_body_the_engine_cannot_parse_is_rejected_and_the_rest_inserted(store):
    codec = tcodec.default_codec()
    w = Writer(store, Hasher(b"k"), codec=codec)
    ev = jsonform.parse_line(json.dumps(SAMPLES["net.cdr.raw"][0]))
    good = codec.encode(ev)
    bad = good[:14]                                # truncated body, valid header
    assert w.add_encoded("net.cdr.raw", good, 0, 0, 0)
    assert w.add_encoded("net.cdr.raw", bad, 0, 1, 0)
    assert w.add_encoded("net.cdr.raw", good, 0, 2, 0)
    res = w.flush()
    assert [(r.partition, r.offset) for r in res.rejected] == [(0, 1)]
    assert "undecodable" in res.rejected[0].reason
    assert store.client.query("SELECT _offset FROM net_cdr_raw ORDER BY _offset").result_rows == [(0,), (2,)]


def test_one_part_per_flush_even_for_a_large_batch(store):
    """The client sends ~2 MB blocks; the engine must squash them into one part."""
    from telbus import demo

    codec = tcodec.default_codec()
    store.client.command("SYSTEM STOP MERGES net_cdr_raw")
    w = Writer(store, Hasher(b"k"), codec=codec, fast=False)
    for i, (_t, _k, e) in enumerate(demo.cdr_stream(3, 60_000, 500)):
        w.add("net.cdr.raw", e, i % 3, i, 0)
    w.flush()
    w.fast = True
    for i, (_t, _k, e) in enumerate(demo.cdr_stream(5, 60_000, 500)):
        assert w.add_encoded("net.cdr.raw", codec.encode(e), 3 + i % 3, i, 0)
    w.flush()
    parts = store.client.query("SELECT count() FROM system.parts WHERE table = 'net_cdr_raw' AND active"
                               ).result_rows[0][0]
    assert parts == 2
