"""Alarm correlation end to end on a real broker: a `telbus worker` consumes
oss.alarm.raw / oss.topology / bss.subscriber.events and publishes oss.incidents.

Each test uses its own NE, site and alarm ids, so the tests share one worker (and the
session's broker) without seeing each other's incidents.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from telbus import config, kafka
from telbus.localbroker import free_port

from tests.helpers import Proc, produce, read_topic, unique, wait_until

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
SEC = 1000


# ---------------------------------------------------------------------- events
def ne(ne_id, parent, site, ne_type="ONU", services=("BROADBAND",)):
    return {
        "event_type": "NetworkElement",
        "event_id": unique("ne-"),
        "event_time": T0 - 86_400_000,
        "source": "NMS-HW",
        "ne_id": ne_id,
        "ne_type": ne_type,
        "parent_ne_id": parent,
        "site_id": site,
        "services": list(services),
    }


def subscriber(sub_id, access_ne):
    return {
        "event_type": "SubscriberCreated",
        "event_id": unique("sc-"),
        "event_time": T0 - 86_400_000,
        "source": "CRM-GD",
        "subscriber_id": sub_id,
        "msisdn": "13800138000",
        "account_id": "ACC-" + sub_id,
        "home_province": "GD",
        "payment_type": "PREPAID",
        "plan_id": "PLAN-X",
        "real_name": "Test Person",
        "id_number": "440100199001011234",
        "broadband_account": None,
        "broadband_type": "E8_1",
        "access_ne_id": access_ne,
    }


def alarm(alarm_id, ne_id, site, sec, cause="LOS", severity="MAJOR"):
    return {
        "event_type": "Alarm",
        "event_id": "ev-" + alarm_id,
        "event_time": T0 + int(sec * SEC),
        "source": "NMS-HW",
        "alarm_id": alarm_id,
        "ne_id": ne_id,
        "site_id": site,
        "probable_cause": cause,
        "severity": severity,
        "text": None,
    }


# ---------------------------------------------------------------------- worker
def start_worker(app_id, worker_id, log_dir, faust_app_id=None):
    """A `telbus worker` running only the alarms processor, with its own groups and
    internal topics (named after app_id)."""
    proc = Proc(
        f"worker-{worker_id}",
        ["worker", "--loglevel", os.environ.get("ALARMS_IT_LOGLEVEL", "warning")],
        # only this processor; Faust rejects web port 0 (which conftest sets): a free port
        env={"TELBUS_WORKER_APP_ID": faust_app_id or app_id, "TELBUS_ALARMS_GROUP": f"{app_id}-alarms",
             "TELBUS_WORKER_ID": worker_id,
             "TELBUS_WORKER_AGENTS": "alarms", "TELBUS_WORKER_WEB_PORT": str(free_port())},
        log_dir=log_dir,
    )
    # Faust creates only the last level of its datadir
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    proc.start(ready_timeout=180)
    proc.funnel = f"{app_id}-alarms.correlation"
    return proc


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    uid = unique("al")
    proc = start_worker(f"telbus-it-{uid}", uid, tmp_path_factory.mktemp("alarms-worker"))
    try:
        yield proc
    finally:
        proc.stop()


def load_reference(worker, nes, subscribers, tag):
    """Publish topology and placements; return once the correlator's funnel holds them all."""
    produce("oss.topology", nes)
    produce("bss.subscriber.events", subscribers)
    want = len(nes) + len(subscribers)

    def forwarded():
        recs = read_topic(worker.funnel, decode=False,
                          predicate=lambda k, v: v is not None and tag.encode() in v and b'"kind":"alarm"' not in v)
        return len(recs) >= want

    wait_until(forwarded, 120, 0.5, f"{want} topology/subscriber records in {worker.funnel}")


def incidents(prefix):
    """IncidentEvents on oss.incidents whose incident_id starts with prefix, in offset order per key."""
    return read_topic("oss.incidents", timeout=30,
                      predicate=lambda k, v: v.get("incident_id", "").startswith(prefix))


def wait_incidents(prefix, n, what, timeout=120):
    """Wait until at least n IncidentEvents with the prefix are on oss.incidents."""
    def enough():
        recs = incidents(prefix)
        return recs if len(recs) >= n else None

    return wait_until(enough, timeout, 0.5, what)


def last_per_incident(records):
    last = {}
    for _p, _o, _k, v in sorted(records, key=lambda r: (r[0], r[1])):
        last[v["incident_id"]] = v
    return last


# ---------------------------------------------------------------------- tests
def test_olt_with_three_onus_onu_alarms_first(worker):
    u = unique("OO")
    olt, agg = f"{u}-OLT", f"{u}-AGG"
    onus = [(f"{u}-ONU{i}", f"{u}-S{i}") for i in range(1, 4)]
    nes = [ne(olt, None, agg, "OLT", ("BROADBAND", "IPTV"))] + [ne(n, olt, s) for n, s in onus]
    subs = [subscriber(f"{u}-U{i}-{j}", n) for i, (n, _s) in enumerate(onus) for j in range(4)]
    load_reference(worker, nes, subs, u)

    # the three ONU alarms first (each at its own site, so on their own partitions) ...
    produce("oss.alarm.raw", [alarm(f"{u}-A{i}", n, s, i) for i, (n, s) in enumerate(onus)])
    prefix = f"INC-{u}-"
    wait_incidents(prefix, 3, "three ONU incidents opened")
    # ... then the OLT's, 20 s later in event time, at the aggregation site
    produce("oss.alarm.raw", [alarm(f"{u}-OLTA", olt, agg, 22, "EQUIPMENT_FAILURE", "CRITICAL")])
    recs = wait_incidents(prefix, 7, "takeover")

    changes = Counter(v["change"] for *_x, v in recs)
    assert changes == {"OPENED": 4, "MERGED": 3}
    root = next(v for *_x, v in recs if v["root_ne_id"] == olt)
    assert root["incident_id"] == f"INC-{u}-OLTA"
    assert sorted(root["alarm_ids"]) == sorted([f"{u}-OLTA", f"{u}-A0", f"{u}-A1", f"{u}-A2"])
    assert root["affected_subscribers"] == 12
    assert root["affected_services"] == ["BROADBAND", "IPTV"]
    assert root["severity"] == "CRITICAL"
    assert root["root_ne_known"] is True
    merged = [v for *_x, v in recs if v["change"] == "MERGED"]
    assert {m["merged_into"] for m in merged} == {root["incident_id"]}
    # every record is keyed by its incident's site
    for _p, _o, key, v in recs:
        assert key == v["site_id"]
    assert {k for _p, _o, k, v in recs if v["change"] == "MERGED"} == {s for _n, s in onus}

    # clearing the root clears the one incident
    produce("oss.alarm.raw", [alarm(f"{u}-OLTC", olt, agg, 300, "EQUIPMENT_FAILURE", "CLEARED")])
    recs = wait_incidents(prefix, 8, "cleared")
    last = last_per_incident(recs)
    assert last[root["incident_id"]]["change"] == "CLEARED"


def test_flapping_port(worker):
    u = unique("FP")
    site = f"{u}-S"
    sw, olt, onu = f"{u}-SW", f"{u}-OLT", f"{u}-ONU"
    load_reference(worker, [ne(sw, None, site, "SWITCH", ("IP",)), ne(olt, None, site, "OLT"),
                            ne(onu, olt, site)], [], u)
    flaps = []
    # a switch port flapping on its own: raise/clear every 30 s
    for k in range(3):
        flaps.append(alarm(f"{u}-P{k}R", sw, site, 60 * k, "PORT_DOWN", "MINOR"))
        flaps.append(alarm(f"{u}-P{k}C", sw, site, 60 * k + 30, "PORT_DOWN", "CLEARED"))
    # an ONU port flapping inside an OLT incident
    flaps.append(alarm(f"{u}-OLT1", olt, site, 0, "EQUIPMENT_FAILURE", "CRITICAL"))
    for k in range(2):
        flaps.append(alarm(f"{u}-O{k}R", onu, site, 10 + 60 * k, "PORT_DOWN", "MAJOR"))
        flaps.append(alarm(f"{u}-O{k}C", onu, site, 40 + 60 * k, "PORT_DOWN", "CLEARED"))
    produce("oss.alarm.raw", flaps)  # one site: one partition, order kept

    prefix = f"INC-{u}-"
    # switch: 3 incidents (OPENED+CLEARED each); OLT: OPENED + 4 UPDATED
    recs = wait_incidents(prefix, 11, "flap events")
    by_inc = {}
    for _p, _o, _k, v in sorted(recs, key=lambda r: (r[0], r[1])):
        by_inc.setdefault(v["incident_id"], []).append(v)
    sw_incs = [by_inc[f"INC-{u}-P{k}R"] for k in range(3)]
    assert [e["flapping"] for e in sw_incs[0]] == [False, False]
    assert [e["flapping"] for e in sw_incs[1]] == [False, True]  # 4th transition clears it
    assert [(e["change"], e["flapping"]) for e in sw_incs[2]] == [("OPENED", True), ("CLEARED", True)]
    olt_events = by_inc[f"INC-{u}-OLT1"]
    assert [e["change"] for e in olt_events] == ["OPENED", "UPDATED", "UPDATED", "UPDATED", "UPDATED"]
    assert [e["flapping"] for e in olt_events] == [False, False, False, False, True]


def test_bad_alarms_go_to_dlq(worker):
    u = unique("BD")
    p = kafka.producer()
    p.produce("oss.alarm.raw", b"\x00not avro at all", key=f"{u}-S".encode())
    p.flush(30)
    bad = alarm(f"{u}-X", "", f"{u}-S", 0)  # encodable, but no NE
    produce("oss.alarm.raw", [bad])

    def dlq():
        return read_topic("oss.alarm.raw.dlq", decode=False, predicate=lambda k, v: k == f"{u}-S")

    recs = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(dlq()), 120, 0.5, "2 DLQ records")
    assert recs[0][3] == b"\x00not avro at all"


def storm_plan(u, n_olt=40, n_onu=32):
    """Topology and >= 10,000 raw alarms. Each OLT and its ONUs share one site, so a
    block's alarms stay in one partition and arrive in order."""
    nes, subs, alarms = [], [], []
    seq = 0

    def add(ne_id, site, sec, cause, sev):
        nonlocal seq
        seq += 1
        alarms.append(alarm(f"{u}-{seq:05d}", ne_id, site, sec, cause, sev))

    for k in range(n_olt):
        site, olt = f"{u}-SITE{k:02d}", f"{u}-OLT{k:02d}"
        nes.append(ne(olt, None, site, "OLT", ("BROADBAND", "IPTV")))
        onus = [f"{u}-ONU{k:02d}-{i:02d}" for i in range(n_onu)]
        nes.extend(ne(o, olt, site) for o in onus)
        subs.extend(subscriber(f"{o}-U", o) for o in onus)
        b = 300 * k
        first = []
        if k % 2 == 0:  # ONU alarms first, OLT 20 s later
            first = [(o, b + i % 15) for i, o in enumerate(onus)]
            for o, t in first:
                add(o, site, t, "LOS", "MAJOR")
            add(olt, site, b + 20, "EQUIPMENT_FAILURE", "CRITICAL")
        else:
            add(olt, site, b, "EQUIPMENT_FAILURE", "CRITICAL")
            for i, o in enumerate(onus):
                add(o, site, b + 1 + i % 50, "LOS", "MAJOR")
        for i, o in enumerate(onus):
            add(o, site, b + 25 + i % 15, "DYING_GASP", "MINOR")
        for rep in range(6):  # re-notifications of the active LOS: dedup
            for i, o in enumerate(onus):
                add(o, site, b + 41 + rep * 2, "LOS", "MAJOR")
        add(onus[3], site, b + 200, "HIGH_TEMPERATURE", "WARNING")  # unrelated local fault
        add(onus[5], site, b + 210, "FAN_FAILURE", "CLEARED")  # clear with nothing active
        add(olt, site, b + 250, "EQUIPMENT_FAILURE", "CLEARED")
        add(onus[3], site, b + 260, "HIGH_TEMPERATURE", "CLEARED")
    return nes, subs, alarms


def test_demo_storm_compresses_and_loses_nothing(worker):
    u = unique("ST")
    n_olt, n_onu = 40, 32
    nes, subs, alarms = storm_plan(u, n_olt, n_onu)
    assert len(alarms) >= 10_000
    load_reference(worker, nes, subs, u)
    produce("oss.alarm.raw", alarms)

    prefix = f"INC-{u}-"
    expected_surviving = 2 * n_olt  # one per OLT outage + one unrelated fault per block

    def done():
        recs = incidents(prefix)
        last = last_per_incident(recs)
        cleared = [v for v in last.values() if v["change"] == "CLEARED"]
        return (recs, last) if len(cleared) >= expected_surviving else None

    recs, last = wait_until(done, 420, 2.0, "storm incidents cleared")
    surviving = {i: v for i, v in last.items() if v["change"] != "MERGED"}
    merged = {i: v for i, v in last.items() if v["change"] == "MERGED"}
    assert len(surviving) == expected_surviving
    assert all(v["change"] == "CLEARED" for v in surviving.values())
    assert len(merged) == (n_olt // 2) * n_onu
    olt_incs = {i: v for i, v in surviving.items() if "-OLT" in v["root_ne_id"]}
    assert len(olt_incs) == n_olt
    assert {m["merged_into"] for m in merged.values()} <= set(olt_incs)
    for v in olt_incs.values():
        assert v["affected_subscribers"] == n_onu
        assert len(v["alarm_ids"]) == 1 + n_onu * 8

    raises = {a["alarm_id"] for a in alarms if a["severity"] != "CLEARED"}
    listed = Counter(a for v in surviving.values() for a in v["alarm_ids"])
    assert set(listed) == raises  # no raw alarm lost
    assert max(listed.values()) == 1  # and none counted twice
    assert len(alarms) / len(surviving) > 100  # the compression an operator sees

