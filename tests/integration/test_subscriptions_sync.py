"""Subscription sync end to end on a real broker: a `telbus worker` running the
subscriptions processor consumes bss.subscriber.events / bss.order.events, publishes
bss.order.status and bss.subscription.state, serves the HTTP views; the export reads the
compacted topic.

Every test uses its own subscriber/order ids, so they share one worker.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from telbus import config
from telbus.localbroker import free_port

from tests.helpers import Proc, produce, read_topic, unique, wait_until

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
SEC = 1000
DAY = 86_400_000


# ---------------------------------------------------------------------- events
def created(sid, msisdn, bb, t=T0):
    return {"event_type": "SubscriberCreated", "event_id": unique("sc-"), "event_time": t, "source": "CRM-GD",
            "subscriber_id": sid, "msisdn": msisdn, "account_id": "ACC-" + sid, "home_province": "GD",
            "payment_type": "POSTPAID", "plan_id": "PLAN-X", "real_name": "Test Person",
            "id_number": "440100199001011234", "broadband_account": bb, "broadband_type": "E8_1",
            "access_ne_id": None}


def submitted(sid, oid, items, t):
    return {"event_type": "OrderSubmitted", "event_id": unique("os-"), "event_time": t, "source": "CRM-GD",
            "order_id": oid, "subscriber_id": sid, "channel": "APP",
            "items": [{"action": a, "product_id": p, "product_type": ty} for a, p, ty in items]}


def dispatched(sid, oid, wid, t, target="ISMP", eid=None):
    return {"event_type": "WorkOrderDispatched", "event_id": eid or unique("wd-"), "event_time": t,
            "source": "IBSS", "order_id": oid, "work_order_id": wid, "target_system": target,
            "subscriber_id": sid}


def completed(sid, oid, wid, t, result="SUCCESS", eid=None):
    return {"event_type": "WorkOrderCompleted", "event_id": eid or unique("wc-"), "event_time": t,
            "source": "ISMP", "order_id": oid, "work_order_id": wid, "result": result,
            "error": None if result == "SUCCESS" else "ISMP-4012 refused", "subscriber_id": sid}


def msisdn_for(u: str) -> str:
    return "139" + str(int(u[-8:], 16) % 10 ** 8).rjust(8, "0")


# ---------------------------------------------------------------------- worker
def _worker_proc(uid, app_id, port, log_dir):
    return Proc(f"worker-{uid}", ["worker", "--loglevel", "warning"],
                env={"TELBUS_WORKER_APP_ID": app_id, "TELBUS_WORKER_ID": uid,
                     "TELBUS_WORKER_AGENTS": "subscriptions", "TELBUS_WORKER_WEB_PORT": str(port)},
                log_dir=log_dir)


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    uid = unique("sub")
    app_id = f"telbus-it-{uid}"
    port = free_port()
    log_dir = tmp_path_factory.mktemp("subscriptions-worker")
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    proc = _worker_proc(uid, app_id, port, log_dir).start(ready_timeout=180)
    holder = {"proc": proc, "base": f"http://127.0.0.1:{port}/views",
              "restart": lambda: _worker_proc(uid, app_id, port, log_dir).start(ready_timeout=180)}
    try:
        yield holder
    finally:
        holder["proc"].stop()


def statuses(oid):
    recs = read_topic("bss.order.status", timeout=30, predicate=lambda k, v: v.get("order_id") == oid)
    return [v for _p, _o, _k, v in sorted(recs, key=lambda r: (r[0], r[1]))]


def states(sid):
    recs = read_topic("bss.subscription.state", timeout=30, predicate=lambda k, v: k == sid)
    return [v for _p, _o, _k, v in sorted(recs, key=lambda r: (r[0], r[1]))]


def wait_status(oid, status, n=None, timeout=60):
    def ok():
        s = statuses(oid)
        return s if s and s[-1]["status"] == status and (n is None or len(s) >= n) else None
    return wait_until(ok, timeout, 0.3, f"order {oid} {status}")


def wait_version(sid, version, timeout=60):
    return wait_until(lambda: (s := states(sid)) and s[-1]["version"] >= version and s, timeout, 0.3,
                      f"{sid} version {version}")


def get(base, path):
    try:
        with urllib.request.urlopen(f"{base}/{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def dlq_records(topic, needle):
    return read_topic(topic + ".dlq", timeout=30, decode=False, predicate=lambda k, v: needle.encode() in (v or b""))


# ---------------------------------------------------------------------- tests
def test_order_with_two_work_orders_succeeding(worker):
    u = unique("A")
    sid, oid, bb = f"{u}-S", f"{u}-O", f"{u}-bb"
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), bb)])
    produce("bss.order.events", [
        submitted(sid, oid, [("ADD", f"{u}-VAS", "VAS"), ("ADD", f"{u}-BB", "BROADBAND")], T0 + SEC),
        dispatched(sid, oid, "W1", T0 + 2 * SEC), dispatched(sid, oid, "W2", T0 + 3 * SEC, "AAA"),
        completed(sid, oid, "W1", T0 + 4 * SEC), completed(sid, oid, "W2", T0 + 5 * SEC)])
    st = wait_status(oid, "COMPLETED")
    assert [s["status"] for s in st] == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert st[-1]["updated_at"] == T0 + 5 * SEC and st[-1]["failed_work_orders"] == []
    ss = wait_version(sid, 2)
    assert [s["version"] for s in ss] == [1, 2]
    assert ss[-1]["products"] == sorted([f"{u}-VAS", f"{u}-BB"]) and ss[-1]["updated_at"] == T0 + 5 * SEC
    # the views, from the running worker, within a second of the state being published
    code, ehome = wait_until(lambda: (r := get(worker["base"], f"ehome/{bb}"))[0] == 200
                             and r[1]["version"] == 2 and r, 5, 0.1, "ehome view")
    assert ehome["account_type"] == "E8_1"
    assert {p["product_id"]: p["product_type"] for p in ehome["products"]} == {f"{u}-VAS": "VAS",
                                                                             f"{u}-BB": "BROADBAND"}
    code, vnet = get(worker["base"], f"vnet/{bb}")
    assert code == 200 and [p["product_id"] for p in vnet["subscriptions"]] == [f"{u}-VAS"]
    code, ismp = get(worker["base"], f"ismp/{msisdn_for(u)}")
    assert code == 200 and ismp["products"] == sorted([f"{u}-VAS", f"{u}-BB"])
    assert get(worker["base"], f"ehome/{u}-nobody")[0] == 404
    assert get(worker["base"], "ismp/00000000000")[0] == 404


def test_order_with_one_failing_work_order(worker):
    u = unique("F")
    sid, oid = f"{u}-S", f"{u}-O"
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), None)])
    produce("bss.order.events", [
        submitted(sid, oid, [("ADD", f"{u}-P", "VAS")], T0 + SEC),
        dispatched(sid, oid, "W1", T0 + 2 * SEC), dispatched(sid, oid, "W2", T0 + 3 * SEC),
        completed(sid, oid, "W2", T0 + 4 * SEC, "FAILED"), completed(sid, oid, "W1", T0 + 5 * SEC)])
    st = wait_status(oid, "FAILED")
    assert [s["status"] for s in st] == ["SUBMITTED", "IN_PROGRESS", "FAILED"]
    assert st[-1]["failed_work_orders"] == ["W2"] and st[-1]["updated_at"] == T0 + 4 * SEC
    # no COMPLETED ever, and the subscription did not change
    produce("bss.order.events", [submitted(sid, f"{u}-MARK", [], T0 + 9 * SEC)])
    wait_status(f"{u}-MARK", "COMPLETED")
    assert [s["status"] for s in statuses(oid)] == ["SUBMITTED", "IN_PROGRESS", "FAILED"]
    assert [s["products"] for s in states(sid)] == [[]]


def test_order_without_work_orders_completes_on_submit(worker):
    u = unique("N")
    sid = f"{u}-S"
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), None)])
    produce("bss.order.events", [
        submitted(sid, f"{u}-O1", [("ADD", "VAS-BILL-REMINDER", "VAS")], T0 + SEC),
        submitted(sid, f"{u}-O2", [], T0 + 2 * SEC)])
    for oid, t in ((f"{u}-O1", T0 + SEC), (f"{u}-O2", T0 + 2 * SEC)):
        st = wait_status(oid, "COMPLETED")
        assert [(s["status"], s["updated_at"]) for s in st] == [("SUBMITTED", t), ("COMPLETED", t)]
    ss = wait_version(sid, 2)
    assert ss[-1]["products"] == ["VAS-BILL-REMINDER"] and len(ss) == 2


def test_out_of_order_arrival(worker):
    """Completion before its dispatch, work orders before the order, the order before the
    subscriber: same result as in order."""
    u = unique("X")
    sid, oid = f"{u}-S", f"{u}-O"
    product = "CONTENT-TIANYI-VIDEO"  # catalogued: provisioned on ISMP and VNET
    produce("bss.order.events", [
        completed(sid, oid, "W2", T0 + 6 * SEC), dispatched(sid, oid, "W1", T0 + 2 * SEC, "ISMP"),
        completed(sid, oid, "W1", T0 + 5 * SEC),
        submitted(sid, oid, [("ADD", product, "CONTENT")], T0 + SEC),
        dispatched(sid, oid, "W2", T0 + 3 * SEC, "VNET")])
    st = wait_status(oid, "COMPLETED")
    assert [s["status"] for s in st] == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]
    assert st[-1]["updated_at"] == T0 + 6 * SEC
    # subscription published once the subscriber exists, with the product already in
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), f"{u}-bb", t=T0)])
    ss = wait_version(sid, 1)
    assert len(ss) == 1 and ss[0]["products"] == [product] and ss[0]["version"] == 1
    code, vnet = wait_until(lambda: (r := get(worker["base"], f"vnet/{u}-bb"))[0] == 200 and r, 5, 0.1, "vnet")
    assert [p["product_id"] for p in vnet["subscriptions"]] == [product]


def test_bad_input_dead_letters_or_no_ops(worker):
    u = unique("B")
    sid, oid = f"{u}-S", f"{u}-O"
    dup = dispatched(sid, oid, "W1", T0 + 2 * SEC, eid=f"{u}-dup")
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), None)])
    produce("bss.order.events", [
        submitted(sid, oid, [("REMOVE", f"{u}-ABSENT", "VAS")], T0 + SEC), dup, dup,
        completed(sid, oid, "W1", T0 + 3 * SEC),
        completed(sid, f"{u}-GHOST", "WG", T0 + 4 * SEC, eid=f"{u}-ghost")])
    st = wait_status(oid, "COMPLETED")
    assert [s["status"] for s in st] == ["SUBMITTED", "IN_PROGRESS", "COMPLETED"]   # duplicate: no-op
    assert [s["version"] for s in states(sid)] == [1]                                # REMOVE absent: no-op
    # the unknown order is held; a day of event time later it is dead-lettered, original bytes
    produce("bss.order.events", [submitted(sid, f"{u}-LATER", [], T0 + 2 * DAY)])
    wait_status(f"{u}-LATER", "COMPLETED")
    recs = wait_until(lambda: dlq_records("bss.order.events", f"{u}-ghost"), 60, 0.5, "ghost in DLQ")
    assert len(recs) == 1
    # a record that is not Avro at all
    from telbus import kafka

    p = kafka.producer()
    p.produce("bss.order.events", b"not avro", sid.encode())
    p.flush(30)
    wait_until(lambda: read_topic("bss.order.events.dlq", timeout=30, decode=False,
                                  predicate=lambda k, v: k == sid and v == b"not avro"), 60, 0.5, "garbage in DLQ")
    # still alive and processing
    produce("bss.order.events", [submitted(sid, f"{u}-AFTER", [], T0 + 2 * DAY + SEC)])
    wait_status(f"{u}-AFTER", "COMPLETED")


def test_dlq_headers_name_the_reason(worker):
    u = unique("H")
    sid = f"{u}-S"
    from confluent_kafka import TopicPartition

    from telbus import kafka

    pub = kafka.Publisher()
    pub.send("bss.order.events", completed("other", f"{u}-O", "W1", T0), key=sid)  # key != subscriber_id
    assert not pub.flush().failed

    def find():
        topic = "bss.order.events.dlq"
        c = kafka.consumer(None, **{"enable.partition.eof": True})
        try:
            parts = sorted(c.list_topics(timeout=10).topics[topic].partitions)
            c.assign([TopicPartition(topic, p, 0) for p in parts])
            eof, found = set(), None
            deadline = time.monotonic() + 20
            while len(eof) < len(parts) and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    eof.add(m.partition())
                    continue
                if m.key() == sid.encode():
                    found = dict(m.headers())
            return found
        finally:
            c.close()
    h = wait_until(find, 60, 0.5, "DLQ record with headers")
    assert b"message key" in h["telbus.error"] and h["telbus.original.topic"] == b"bss.order.events"
    assert h["telbus.stage"] == b"subscriptions"


def test_views_after_restart_and_export_consistency(worker):
    from processors.subscriptions import cli as export_cli
    from processors.subscriptions import export

    u = unique("R")
    sids = [f"{u}-S{i}" for i in range(3)]
    produce("bss.subscriber.events", [created(s, msisdn_for(u)[:-1] + str(i), f"{s}-bb") for i, s in enumerate(sids)])
    produce("bss.order.events", [submitted(s, f"{s}-O", [("ADD", "VAS-BILL-REMINDER", "VAS")], T0 + SEC)
                                 for s in sids])
    for s in sids:
        wait_version(s, 2)
    full1 = export_cli.run_export(None)
    assert {r["subscriber_id"]: r["version"] for r in full1.rows if r["subscriber_id"] in sids} == dict.fromkeys(sids, 2)

    # restart the worker: the views come back from processor state
    worker["proc"].stop()
    worker["proc"] = worker["restart"]()
    code, v = wait_until(lambda: (r := get(worker["base"], f"ehome/{sids[0]}-bb"))[0] == 200 and r, 30, 0.2,
                         "ehome view after restart")
    assert [p["product_id"] for p in v["products"]] == ["VAS-BILL-REMINDER"] and v["version"] == 2

    # more changes after the first export, processed by the restarted worker
    produce("bss.order.events", [submitted(sids[0], f"{u}-O2", [("REMOVE", "VAS-BILL-REMINDER", "VAS")],
                                           T0 + 5 * SEC)])
    produce("bss.subscriber.events", [{"event_type": "PlanChanged", "event_id": unique("pc-"),
                                       "event_time": T0 + 6 * SEC, "source": "CRM-GD",
                                       "subscriber_id": sids[1], "plan_id": "PLAN-Y"}])
    wait_version(sids[0], 3)
    wait_version(sids[1], 3)
    inc = export_cli.run_export(full1.cursor)
    assert {r["subscriber_id"] for r in inc.rows} >= {sids[0], sids[1]}
    assert sids[2] not in {r["subscriber_id"] for r in inc.rows}
    full2 = export_cli.run_export(None)
    assert export.to_jsonl(export.merge(full1.rows, inc.rows)) == export.to_jsonl(full2.rows)
    assert export.to_csv(export.merge(full1.rows, inc.rows)) == export.to_csv(full2.rows)
    # states survived the restart: versions continue at +1, no reset
    assert [s["version"] for s in states(sids[0])] == [1, 2, 3]
    code, v = wait_until(lambda: (r := get(worker["base"], f"ismp/{msisdn_for(u)[:-1]}0"))[0] == 200
                         and r[1]["version"] == 3 and r, 5, 0.1, "ismp view after change")
    assert v["products"] == []


def _group_stable(group, members):
    from confluent_kafka import ConsumerGroupState

    from telbus import kafka

    try:
        admin = kafka.admin()  # keep a reference: a collected client cancels its requests
        d = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except Exception:
        return False
    return d.state == ConsumerGroupState.STABLE and len(d.members) == members


def test_any_worker_answers_for_any_key(broker, tmp_path_factory):
    """Two workers of one app: whichever owns the subscriber, both serve its views."""
    app_id = f"telbus-it-{unique('pair')}"
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    ports = [free_port(), free_port()]
    procs = []
    try:
        for port in ports:
            p = _worker_proc(unique("subp"), app_id, port, tmp_path_factory.mktemp("subscriptions-pair"))
            procs.append(p.start(ready_timeout=180))
        bases = [f"http://127.0.0.1:{port}/views" for port in ports]
        wait_until(lambda: _group_stable(f"{app_id}-subscriptions", 2), 120, 0.5, "both workers in a stable group")
        u = unique("W")
        sids = [f"{u}-S{i}" for i in range(6)]   # spread over partitions, so over both workers
        produce("bss.subscriber.events", [created(s, msisdn_for(u)[:-1] + str(i), f"{s}-bb")
                                          for i, s in enumerate(sids)])
        produce("bss.order.events", [submitted(s, f"{s}-O", [("ADD", "SECURITY-ANTI-FRAUD", "SECURITY")],
                                               T0 + SEC) for s in sids])
        # The pair's group is new: it starts with the whole history of both topics. Event-time
        # alignment waits for the topic still being fetched, but a fetch silent for longer than
        # its idle bound on a busy machine lets an order go ahead of its subscriber's creation
        # (one state instead of two). Either way a view must show the latest published state.
        want = [{"product_id": "SECURITY-ANTI-FRAUD", "product_type": "SECURITY"}]
        try:
            for base in bases:
                for s in sids:
                    wait_until(lambda: (r := get(base, f"ehome/{s}-bb"))[0] == 200
                               and r[1]["products"] == want, 120, 0.2, f"{s} on {base}")
                    assert get(base, f"vnet/{s}-bb")[1]["subscriptions"] == []
        except AssertionError as exc:   # what each worker answers, and what was published
            seen = {s: [st["version"] for st in states(s)] for s in sids}
            answers = {base: {s: get(base, f"ehome/{s}-bb") for s in sids} for base in bases}
            raise AssertionError(f"{exc}\npublished versions: {seen}\nanswers: {answers}") from None
        for s in sids:
            last = states(s)[-1]["version"]
            assert [get(base, f"ehome/{s}-bb")[1]["version"] for base in bases] == [last, last]
    finally:
        for p in procs:
            p.stop()


def test_export_command_full_and_since(worker, tmp_path):
    """`telbus export subscriptions` as an operator runs it (once wired into the CLI)."""
    from tests.helpers import cli

    if cli("export", "--help").returncode != 0:
        pytest.skip("telbus export not registered in telbus.cli COMMAND_MODULES yet")
    u = unique("E")
    sid = f"{u}-S"
    produce("bss.subscriber.events", [created(sid, msisdn_for(u), None)])
    wait_version(sid, 1)
    cursor_file = tmp_path / "cursor"
    full = cli("export", "subscriptions", "--full", "--cursor-file", cursor_file, check=True)
    rows = [json.loads(line) for line in full.stdout.splitlines()]
    assert any(r["subscriber_id"] == sid and r["version"] == 1 for r in rows)
    produce("bss.order.events", [submitted(sid, f"{sid}-O", [("ADD", "VAS-BILL-REMINDER", "VAS")], T0 + SEC)])
    wait_version(sid, 2)
    inc = cli("export", "subscriptions", "--since", cursor_file.read_text().strip(), "--format", "csv", check=True)
    lines = inc.stdout.splitlines()
    assert lines[0].startswith("subscriber_id,") and any(line.startswith(f"{sid},") and ",2," in line
                                                         for line in lines[1:])
    assert json.loads(inc.stderr.strip().splitlines()[-1])["cursor"].startswith("offsets:")
    assert cli("export", "subscriptions", "--since", "not-a-cursor").returncode == 2
