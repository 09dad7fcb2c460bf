"""The sink loop without a broker: batching bounds, DLQ, commit after insert, outage retry."""
from __future__ import annotations

import json
import threading

import pytest

from sinks import sink as sinkmod
from sinks.sink import Sink, SinkConfig
from sinks.store import Store
from sinks.writer import Writer
from sinks.pii import Hasher
from telbus import codec as tcodec
from telbus import jsonform
from tests.samples import SAMPLES


class Msg:
    def __init__(self, topic, partition, offset, value, key=b"k", ts=1_700_000_000_000):
        self._t, self._p, self._o, self._v, self._k, self._ts = topic, partition, offset, value, key, ts

    def error(self):
        return None

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def key(self):
        return self._k

    def headers(self):
        return None

    def timestamp(self):
        return (1, self._ts)


class FakeConsumer:
    def __init__(self):
        self.commits = []
        self.paused = []

    def commit(self, offsets, asynchronous=False):
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def poll(self, timeout):
        return None

    def pause(self, parts):
        self.paused.append(True)

    def resume(self, parts):
        self.paused.append(False)

    def close(self):
        pass


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value, key, partition=None, headers=None):
        self.sent.append((topic, value, key, partition, dict(headers or [])))

    def flush(self, timeout=None):
        return 0

    def poll(self, timeout=0):
        return 0


@pytest.fixture
def sink(tmp_path):
    s = Sink(SinkConfig(batch_rows=3, batch_ms=60_000, serve_query=False, max_backoff_s=0.05),
             dsn=f"chdb://{tmp_path / 'ch'}")
    s.store = Store(s.dsn)
    s.writer = Writer(s.store, Hasher(b"k"))
    s.consumer = FakeConsumer()
    s.producer = FakeProducer()
    s._assigned = ["net.cdr.raw/0"]
    yield s
    s.store.close()


def cdr_bytes(i):
    ev = jsonform.parse_line(json.dumps(SAMPLES["net.cdr.raw"][0]))
    ev["cdr_id"] = f"C{i}"
    return tcodec.encode(ev)


def test_batch_is_due_by_rows_and_commit_follows_the_insert(sink):
    decode = tcodec.decode
    sink.handle_many([Msg("net.cdr.raw", 0, 0, cdr_bytes(0)), Msg("net.cdr.raw", 0, 1, cdr_bytes(1))], decode)
    assert not sink._due()
    sink.handle_many([Msg("net.cdr.raw", 1, 7, cdr_bytes(2))], decode)
    assert sink._due()
    sink._start_flush()
    sink._wait_flight()
    assert sink.consumer.commits == [{("net.cdr.raw", 0): 2, ("net.cdr.raw", 1): 8}]
    assert sink.store.client.query("SELECT count() FROM net_cdr_raw").result_rows == [(3,)]
    assert sink.store.load_offsets() == {("net.cdr.raw", 0): 2, ("net.cdr.raw", 1): 8}


def test_batch_is_due_by_time(sink):
    sink.cfg.batch_ms = 0
    sink.handle_many([Msg("net.cdr.raw", 0, 0, cdr_bytes(0))], tcodec.decode)
    assert sink._due()


def test_bad_records_go_to_the_dlq_with_reason_and_are_committed(sink):
    login = jsonform.parse_line(json.dumps(SAMPLES["sec.login.events"][0]))
    msgs = [Msg("net.cdr.raw", 0, 0, b"\x00\x01not-avro"),                 # undecodable
            Msg("net.cdr.raw", 0, 1, tcodec.encode(login)),                 # wrong event type for the topic
            Msg("net.cdr.raw", 0, 2, cdr_bytes(2))]
    sink.handle_many(msgs, tcodec.decode)
    sink._flush()
    sent = sink.producer.sent
    assert [(t, h["telbus.original.offset"], h["telbus.stage"]) for t, _v, _k, _p, h in sent] == [
        ("net.cdr.raw.dlq", b"0", b"sink"), ("net.cdr.raw.dlq", b"1", b"sink")]
    assert b"undecodable" in sent[0][4]["telbus.error"] and b"Login" in sent[1][4]["telbus.error"]
    assert sent[0][1] == b"\x00\x01not-avro"                                 # original bytes untouched
    assert sink.consumer.commits[-1] == {("net.cdr.raw", 0): 3}


def test_store_outage_is_retried_with_backoff_and_counted(sink, monkeypatch):
    before = sinkmod.INSERT_RETRIES._value.get()
    calls = {"n": 0}
    real_raw = sink.store.client.raw_insert

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ConnectionError("store down")
        return real_raw(*a, **kw)

    monkeypatch.setattr(sink.store.client, "raw_insert", flaky)
    monkeypatch.setattr(sink.store, "ping", lambda: False)     # the store is down, not the data
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3)], tcodec.decode)
    sink._start_flush()
    sink._wait_flight()
    assert calls["n"] == 4
    assert sinkmod.INSERT_RETRIES._value.get() - before == 3
    assert sinkmod.STORE_UP._value.get() == 1
    assert True in sink.consumer.paused and sink.consumer.paused[-1] is False   # paused while waiting
    assert sink.consumer.commits == [{("net.cdr.raw", 0): 3}]
    assert sink.store.client.query("SELECT count() FROM net_cdr_raw").result_rows == [(3,)]


def test_nothing_is_committed_when_the_flush_gives_up(sink, monkeypatch):
    def down(*a, **kw):
        raise ConnectionError("store down")

    monkeypatch.setattr(sink.store.client, "raw_insert", down)
    monkeypatch.setattr(sink.store, "ping", lambda: False)
    sink.handle_many([Msg("net.cdr.raw", 0, 0, cdr_bytes(0))], tcodec.decode)
    sink._start_flush(max_attempts=2)
    with pytest.raises(ConnectionError):
        sink._wait_flight()
    assert sink.consumer.commits == []
    assert sink.store.load_offsets() == {}


def test_redelivery_after_restart_is_skipped_by_the_fence(sink, tmp_path):
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3)], tcodec.decode)
    sink._flush()
    # a new writer (restart) sees the same records again
    sink.writer = Writer(sink.store, Hasher(b"k"))
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(5)], tcodec.decode)
    assert sink.stats["skipped"] == 3
    sink._flush()
    assert sink.store.client.query("SELECT count(), uniqExact(_offset) FROM net_cdr_raw").result_rows == [(5, 5)]


def test_next_batch_is_framed_while_the_previous_one_inserts(sink, monkeypatch):
    """The due batch is detached and framed before waiting on the insert in flight, then
    inserted after it: offsets committed in order, every row once."""
    go = threading.Event()
    seen = {}
    real_raw = sink.store.client.raw_insert
    calls = {"n": 0}

    def slow_first(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            assert go.wait(10), "the next batch was never framed"
        return real_raw(*a, **kw)

    monkeypatch.setattr(sink.store.client, "raw_insert", slow_first)
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3)], tcodec.decode)
    sink._start_flush()

    def watch():
        deadline = threading.Event()
        for _ in range(1000):
            ready = sink._ready
            if ready is not None:
                seen["framed"] = bool(ready.batch.blobs) and sink._flight.thread.is_alive()
                break
            deadline.wait(0.01)
        go.set()

    t = threading.Thread(target=watch)
    t.start()
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3, 6)], tcodec.decode)
    assert sink._due()
    sink._flush_due()
    t.join(10)
    sink._wait_flight()
    assert seen == {"framed": True}
    assert sink.consumer.commits == [{("net.cdr.raw", 0): 3}, {("net.cdr.raw", 0): 6}]
    assert sink.store.client.query("SELECT count(), uniqExact(_offset) FROM net_cdr_raw").result_rows == [(6, 6)]


def test_a_rebalance_flushes_the_framed_batch_once(sink, monkeypatch):
    """A revoke while a framed batch waits for its turn inserts and commits it before the
    partitions go; the loop then does not launch it a second time."""
    real_wait = sink._wait_flight
    revoked = []

    def wait_then_revoke(abort_after_s=None):      # as if the consumer's poll rebalanced
        real_wait(abort_after_s)
        if sink._ready is not None and not revoked:
            revoked.append(True)
            sink._on_revoke(sink.consumer, [])

    monkeypatch.setattr(sink, "_wait_flight", wait_then_revoke)
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3)], tcodec.decode)
    sink._flush_due()
    assert sink._ready is None and sink._flight is None
    assert sink.consumer.commits == [{("net.cdr.raw", 0): 3}]
    assert sink.store.client.query("SELECT count() FROM net_cdr_raw").result_rows == [(3,)]


def test_an_insert_that_landed_before_its_error_is_not_inserted_again(sink, monkeypatch):
    """The store dies after writing the part but before answering: the retry finds the
    rows stored and inserts nothing twice, neither in the table nor in its views."""
    real_raw = sink.store.client.raw_insert
    calls = {"n": 0}

    def lands_then_fails(*a, **kw):
        calls["n"] += 1
        real_raw(*a, **kw)
        if calls["n"] == 1:
            raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(sink.store.client, "raw_insert", lands_then_fails)
    monkeypatch.setattr(sink.store, "ping", lambda: False)
    sink.handle_many([Msg("net.cdr.raw", 0, i, cdr_bytes(i)) for i in range(3)], tcodec.decode)
    sink._start_flush()
    sink._wait_flight()
    assert calls["n"] == 1                                  # nothing left to retry
    assert sink.stats["inserted"] == 3 and sink.stats["retries"] == 1
    assert sink.store.client.query("SELECT count() FROM net_cdr_raw").result_rows == [(3,)]
    from sinks import views

    assert all(r["ok"] for r in views.audit(sink.store.client).values())
    assert sink.consumer.commits == [{("net.cdr.raw", 0): 3}]
