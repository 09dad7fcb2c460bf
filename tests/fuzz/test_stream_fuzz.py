"""Garbage at every input topic through a running worker (all processors) and sink.

For each hypothesis example a record (random bytes, bad headers, garbage bodies behind real
fingerprints, unknown fingerprints, Confluent framing without a registry, mutated valid
records, empty and null values; random keys) goes to a random partition of a random input
topic. Then one valid record goes to every partition that received garbage. Checked:

* no crash: worker and sink still run, no traceback in their logs;
* no stuck partition: every consumer group commits every input partition to its end, and
  the valid records after the garbage are processed (rated, state published, stored);
* every undecodable record is in ``<topic>.dlq`` with its original bytes and a
  ``telbus.error`` reason, once per component that reads the topic (the sink included),
  and every component that dead-letters one garbage record of a topic dead-letters all of
  them; no valid record is dead-lettered. The counts are printed (``pytest -s``).

Also: oversized records (refused by the broker with a clear producer error; just under the
limit and not Avro -> DLQ), records of a schema from the future (-> DLQ naming the
fingerprint), and random JSON lines at ``telbus produce``.
"""
from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict

import pytest
from hypothesis import Phase, given
from hypothesis import strategies as st

from telbus import codec
from telbus.localbroker import free_port
from tests.fuzz import strategies as S
from tests.fuzz.conftest import EXAMPLES, fuzz_settings
from tests.fuzz.stream import (INPUTS, Sender, assignments, dead_letters, lagging, owner, partitions,
                               read_records, send_good_records)
from tests.helpers import Proc, cli, wait_until
from tests.security.cluster import produce_summary

import topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

#: the components that must dead-letter an undecodable record of each input topic
#: (components reading a topic; any other reader may dead-letter too)
READERS = {
    "net.cdr.raw": {"rating", "sink"},
    "bss.subscriber.events": {"subscriptions", "sink"},
    "bss.order.events": {"subscriptions", "sink"},
    "bss.tariff.plans": {"rating", "sink"},
    "oss.topology": {"alarms", "sink"},
    "oss.alarm.raw": {"alarms", "sink"},
    "sec.login.events": {"fraud", "sink"},
}

COMPACTED = {t: "compact" in topics.catalog()[t].config.get("cleanup.policy", "") for t in INPUTS}

#: the broker's default message.max.bytes (a record batch must fit in it)
BROKER_MAX = 1048588


def _crash_lines(proc: Proc) -> list[str]:
    try:
        text = proc.log_path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "Crashed reason=" in line]


#: what the first worker start on the fresh cluster logged as crashed (see test_first_start_...)
FIRST_START: dict = {}


@pytest.fixture(scope="module")
def fuzz_stack(fuzz_broker, tmp_path_factory):
    """Worker (every processor, exactly-once) and sink on the private broker.

    A worker whose first start on the fresh cluster loses an agent or service (a race with
    the creation of its internal topics, reported) is restarted once, so the fuzz tests
    exercise the processors and not that race; test_first_worker_start_on_a_fresh_cluster
    keeps the race visible.
    """
    logs = tmp_path_factory.mktemp("fuzz-logs")
    env = {"TELBUS_WORKER_WEB_PORT": str(free_port())}
    procs = []
    try:
        worker = Proc("worker", ["worker", "--loglevel", "info"], log_dir=logs / "first", env=env).start(240)
        procs.append(worker)
        time.sleep(8)                     # services start right after "ready"
        FIRST_START["crashes"] = _crash_lines(worker)
        if FIRST_START["crashes"]:
            worker.stop()
            worker = Proc("worker", ["worker", "--loglevel", "info"], log_dir=logs, env=env).start(240)
            procs.append(worker)
        sink = Proc("sink", ["sink"], log_dir=logs,
                    env={"TELBUS_SINK_BATCH_MS": "200", "TELBUS_PII_KEY": "fuzz-key", "TELBUS_LOG_LEVEL": "INFO"})
        sink.start(ready_timeout=240)
        procs.append(sink)
        yield {"worker": worker, "sink": sink}
    finally:
        for p in reversed(procs):
            p.stop()


def settle(stack, timeout: float = 180.0) -> None:
    """Wait until every group has committed every input partition; fail if a process died."""
    def done():
        for name, p in stack.items():
            assert p.proc.poll() is None, f"{name} died:\n{p.log_tail()}"
        return not lagging()

    try:
        wait_until(done, timeout, 1.0, "every consumer group at the end of every input partition")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlagging: {lagging()}\nworker:\n{stack['worker'].log_tail(30)}"
                             f"\nsink:\n{stack['sink'].log_tail(30)}") from None


def assert_alive_without_tracebacks(stack) -> None:
    for name, p in stack.items():
        assert p.proc.poll() is None, f"{name} died:\n{p.log_tail()}"
        assert not _crash_lines(p), f"{name}: {_crash_lines(p)}"
        log = p.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"traceback in the {name} log:\n{log[log.index('Traceback') - 2000:][:6000]}"


def assert_good_records_processed(good: dict[str, list[dict]], stack) -> None:
    cdrs = {e["cdr_id"] for e in good.get("net.cdr.raw", [])}
    subs = {e["subscriber_id"] for e in good.get("bss.subscriber.events", [])}
    if cdrs:
        rated = {codec.decode(v)["cdr_id"] for _, _, _, v, _ in read_records("bss.cdr.rated")}
        assert cdrs <= rated, f"not rated: {sorted(cdrs - rated)}"
    if subs:
        states = {codec.decode(v)["subscriber_id"] for _, _, _, v, _ in read_records("bss.subscription.state")
                  if v is not None}
        assert subs <= states, f"no SubscriptionState for {sorted(subs - states)}"
    if cdrs:
        from sinks.queryserver import query_result

        ids = ", ".join(f"'{c}'" for c in sorted(cdrs))

        def stored():
            res = query_result(f"SELECT count() FROM net_cdr_raw FINAL WHERE cdr_id IN ({ids})")
            return res["rows"][0][0] == len(cdrs)

        wait_until(stored, 60, 0.5, "good CDRs in the store")


def check_dead_letters(sent, dlq, report: dict) -> None:
    """The DLQ properties over ``sent`` (see the module doc); fills ``report`` with counts."""
    by_ref = {(s.topic, s.partition, s.offset): s for s in sent}
    stages_by_topic: dict[str, set[str]] = defaultdict(set)   # stages seen on undecodable records
    for ref, copies in dlq.items():
        if ref in by_ref and not by_ref[ref].decodable:
            for cp in copies:
                stages_by_topic[ref[0]].add(cp["stage"])
    for s in sent:
        copies = dlq.get((s.topic, s.partition, s.offset), [])
        t = report.setdefault(s.topic, {"sent": 0, "undecodable": 0, "decodable": 0,
                                        "decodable_dead_lettered": 0, "dlq_copies": Counter()})
        t["sent"] += 1
        for cp in copies:
            t["dlq_copies"][cp["stage"]] += 1
            assert cp["error"], (s, cp)
            assert (cp["value"] or b"") == (s.value or b""), f"DLQ copy altered the bytes of {s.topic}@{s.offset}"
        if s.decodable:
            t["decodable"] += 1
            t["decodable_dead_lettered"] += bool(copies)
            continue
        t["undecodable"] += 1
        owners = {owner(cp["stage"]) for cp in copies}
        missing = READERS[s.topic] - owners
        assert not missing, (f"undecodable record {s.topic}[{s.partition}]@{s.offset} value={s.value!r:.120} "
                             f"not dead-lettered by {sorted(missing)} (copies: {copies})")
        stages = {cp["stage"] for cp in copies}
        assert stages == stages_by_topic[s.topic], (
            f"{s.topic}[{s.partition}]@{s.offset}: dead-lettered by {sorted(stages)}, other garbage of the topic "
            f"by {sorted(stages_by_topic[s.topic])}")


def print_report(title: str, report: dict) -> None:
    print(f"\n{title}")
    for topic, t in sorted(report.items()):
        copies = ", ".join(f"{k}={v}" for k, v in sorted(t["dlq_copies"].items()))
        print(f"  {topic:24} sent={t['sent']:<4} undecodable={t['undecodable']:<4} decodable={t['decodable']:<4} "
              f"(dead-lettered {t['decodable_dead_lettered']})  DLQ copies: {copies}")


# ----------------------------------------------------------------------------------------

def test_garbage_on_every_input_topic(fuzz_stack):
    sender = Sender()

    @fuzz_settings(phases=[Phase.generate])     # nothing to shrink here: the checks come after
    @given(topic=st.sampled_from(INPUTS), data=st.data())
    def feed(topic, data):
        value = data.draw(S.values(topic), label="value")
        key = data.draw(S.keys(), label="key")
        if key is None and COMPACTED[topic]:
            key = b""    # the broker refuses null keys on a compacted topic (and fails the whole batch)
        if key is None and value is None:
            key = b""    # known to crash an agent: test_null_key_and_null_value_... covers it on its own
        partition = data.draw(st.integers(0, partitions(topic) - 1), label="partition")
        sender.send(topic, value, key, partition)

    feed()
    garbage = list(sender.flush())
    where = defaultdict(set)
    for s in garbage:
        where[s.topic].add(s.partition)
    for t in INPUTS:              # every topic gets at least its good record on partition 0
        where[t].add(0)
    good = send_good_records(sender, where)
    sent = sender.flush()
    good_refs = {(s.topic, s.partition, s.offset) for s in sent[len(garbage):]}

    settle(fuzz_stack)
    groups = assignments()
    print("\nconsumer groups (assigned input partitions):",
          {g: len(tps) for g, tps in sorted(groups.items())})
    for t in INPUTS:   # "caught up" means something: every partition has a processor group and the sink
        for p in range(partitions(t)):
            readers = {g for g, tps in groups.items() if (t, p) in tps}
            assert len(readers) >= 2, f"{t}[{p}] is read by {readers} only"
    assert_good_records_processed(good, fuzz_stack)
    dlq = dead_letters()
    wrongly = {ref: [c["stage"] + ": " + (c["error"] or "") for c in dlq[ref]] for ref in good_refs if ref in dlq}
    assert not wrongly, f"valid records dead-lettered: {wrongly}"
    report: dict = {}
    check_dead_letters(garbage, dlq, report)
    print_report(f"stream fuzz: {len(garbage)} records ({EXAMPLES} examples)", report)
    assert sum(t["undecodable"] for t in report.values()) > 0
    assert_alive_without_tracebacks(fuzz_stack)


def test_schema_from_the_future_goes_to_the_dlq_with_its_fingerprint(fuzz_stack):
    sender = Sender()
    for topic in INPUTS:
        sender.send(topic, S.future_schema_value(topic), b"future", partition=0)
    future = list(sender.flush())
    send_good_records(sender, {t: {0} for t in INPUTS})
    sender.flush()
    settle(fuzz_stack)
    dlq = dead_letters()
    report: dict = {}
    check_dead_letters(future, dlq, report)
    for s in future:
        fp = int.from_bytes(s.value[2:10], "little")
        for cp in dlq[(s.topic, s.partition, s.offset)]:
            assert f"unknown schema fingerprint {fp:016x}" in cp["error"], cp
    print_report("schema from the future", report)
    assert_alive_without_tracebacks(fuzz_stack)


def _noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _just_under_the_limit(stack, size: int) -> None:
    # the client limit is lifted so that the broker is the judge of the size
    sender = Sender(**{"message.max.bytes": 4 * BROKER_MAX, "compression.type": "none"})
    for i, topic in enumerate(("net.cdr.raw", "oss.alarm.raw", "sec.login.events")):
        sender.send(topic, _noise(size, i), b"big", partition=0)
    sent = list(sender.flush())
    assert len(sent) == 3
    send_good_records(sender, {s.topic: {0} for s in sent})
    sender.flush()
    settle(stack)
    report: dict = {}
    check_dead_letters(sent, dead_letters(), report)
    print_report(f"records of {size} bytes", report)
    assert_alive_without_tracebacks(stack)


def test_big_record_that_is_not_avro_goes_to_the_dlq(fuzz_stack):
    """Below every client's default limit (librdkafka: 1000000 bytes)."""
    _just_under_the_limit(fuzz_stack, 990_000)


def test_record_beyond_the_broker_limit_is_refused_with_a_clear_error(fuzz_stack):
    sender = Sender(**{"message.max.bytes": 4 * BROKER_MAX, "compression.type": "none"})
    sender.send("net.cdr.raw", _noise(BROKER_MAX + 1000, 7), b"too-big", partition=0)
    sender.producer.flush(60)
    assert not sender.sent and len(sender.errors) == 1
    assert "MSG_SIZE_TOO_LARGE" in sender.errors[0] or "too large" in sender.errors[0].lower(), sender.errors


def _big_alarm(text_len: int) -> str:
    e = json.loads(json.dumps(S.SAMPLES["oss.alarm.raw"][0]))
    e["alarm_id"] = f"AL-big-{text_len}"
    e["text"] = "".join(random.Random(text_len).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=text_len))
    return json.dumps(e) + "\n"


@pytest.mark.parametrize("env", [
    pytest.param({}, id="client-limit"),
    pytest.param({"TELBUS_KAFKA_MESSAGE_MAX_BYTES": str(4 * BROKER_MAX)}, id="broker-limit")])
def test_telbus_produce_oversized_event_fails_clearly(fuzz_broker, env):
    line = _big_alarm(BROKER_MAX + 50_000)
    res = cli("produce", "oss.alarm.raw", input=line, env=env, timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "too large" in res.stderr.lower() or "MSG_SIZE_TOO_LARGE" in res.stderr, res.stderr[-3000:]


@fuzz_settings(max_examples=max(2, EXAMPLES // 50), phases=[Phase.generate])
@given(topic=st.sampled_from(INPUTS), data=st.data())
def test_telbus_produce_random_json_lines(fuzz_broker, topic, data):
    """Random lines at ``telbus produce``: no traceback, each bad line refused with its number
    and a reason, every other line published."""
    from telbus.cli import read_events

    lines = data.draw(st.lists(S.json_lines(topic), min_size=1, max_size=60), label="lines")
    expected = list(read_events([line + "\n" for line in lines], topic))   # as the CLI reads them
    bad = {no: reason for no, ev, reason in expected if ev is None}
    good = [ev for _, ev, _ in expected if ev is not None]
    res = cli("produce", topic, input="".join(line + "\n" for line in lines), timeout=120)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == (1 if bad else 0), res.stderr[-3000:]
    summary = produce_summary(res.stderr)
    assert summary == {"topic": topic, "published": len(good), "rejected_lines": len(bad), "failed": 0}
    for no, reason in bad.items():
        first = reason.splitlines()[0] if reason.strip() else reason
        assert f"line {no}: {first}" in res.stderr, (no, reason)


def test_first_worker_start_on_a_fresh_cluster_loses_nothing(fuzz_stack):
    assert FIRST_START.get("crashes") == [], FIRST_START.get("crashes")


def test_null_key_and_null_value_go_to_the_dlq(fuzz_stack):
    """Near the end of the module: when it fails it takes an agent down."""
    sender = Sender()
    for topic in INPUTS:
        if not COMPACTED[topic]:          # the broker refuses a null key on a compacted topic
            sender.send(topic, None, None, partition=0)
    sent = list(sender.flush())
    send_good_records(sender, {s.topic: {0} for s in sent})
    sender.flush()
    settle(fuzz_stack)
    report: dict = {}
    check_dead_letters(sent, dead_letters(), report)
    print_report("null key, null value", report)
    assert_alive_without_tracebacks(fuzz_stack)


def test_record_just_under_the_broker_limit_and_not_avro_goes_to_the_dlq(fuzz_stack):
    """Last in the module: when it fails it takes the sink down."""
    _just_under_the_limit(fuzz_stack, BROKER_MAX - 600)
