"""A synthetic alarm storm (> 10,000 raw alarms) compresses to the expected incidents
and no raw alarm is lost."""

import random
import time
from collections import Counter

from processors.alarms import correlate as C
from processors.alarms.correlate import Correlator
from processors.alarms.topology import Topology

T0 = 1_795_000_000_000
SEC = 1000
N_OLT = 40
N_ONU = 64
SUBS_PER_ONU = 5
BLOCK_S = 300  # one OLT outage every 5 min of event time


def build_topology():
    topo = Topology()
    t = T0 - 86_400_000

    def ne(ne_id, parent, site, ne_type, services):
        topo.apply_ne(
            {
                "event_id": f"ne-{ne_id}",
                "event_time": t,
                "source": "NMS",
                "ne_id": ne_id,
                "ne_type": ne_type,
                "parent_ne_id": parent,
                "site_id": site,
                "services": services,
            }
        )

    ne("CORE-R1", None, "CORE", "ROUTER", ["IP"])
    for k in range(N_OLT):
        ne(f"OLT-{k:02d}", "CORE-R1", f"AGG-{k % 4}", "OLT", ["BROADBAND", "IPTV"])
        for i in range(N_ONU):
            onu = f"ONU-{k:02d}-{i:02d}"
            ne(onu, f"OLT-{k:02d}", f"ACC-{k:02d}-{i % 8}", "ONU", ["BROADBAND", "VOICE"])
            for s in range(SUBS_PER_ONU):
                topo.apply_subscriber({"subscriber_id": f"U-{onu}-{s}", "event_time": t, "access_ne_id": onu})
    return topo


def storm():
    """Raw alarms in arrival order, plus the expected outcome."""
    rng = random.Random(7)
    alarms = []
    seq = 0

    def add(ne_id, site, sec, cause, sev):
        nonlocal seq
        seq += 1
        alarms.append(
            {
                "event_type": "Alarm",
                "event_id": f"ev-{seq}",
                "event_time": T0 + int(sec * SEC),
                "source": "NMS-HW",
                "alarm_id": f"AL-{seq}",
                "ne_id": ne_id,
                "site_id": site,
                "probable_cause": cause,
                "severity": sev,
                "text": None,
            }
        )

    for k in range(N_OLT):
        b = k * BLOCK_S
        olt = f"OLT-{k:02d}"
        olt_at = b + 20 if k % 2 == 0 else b  # even: ONUs first, OLT 20 s later
        add(olt, f"AGG-{k % 4}", olt_at, "EQUIPMENT_FAILURE", "CRITICAL")
        for i in range(N_ONU):
            onu, site = f"ONU-{k:02d}-{i:02d}", f"ACC-{k:02d}-{i % 8}"
            los_at = b + (i % 15) if k % 2 == 0 else b + 1 + (i % 50)
            add(onu, site, los_at, "LOS", "MAJOR")
            add(onu, site, b + 25 + (i % 15), "DYING_GASP", "MINOR")
            add(onu, site, b + 41 + (i % 9), "LOS", "MAJOR")  # re-notification: dedup
            add(onu, site, b + 52 + (i % 5), "LOS", "MAJOR")  # re-notification: dedup
        for i in (3, 40):  # unrelated local faults, far from the OLT outage
            add(f"ONU-{k:02d}-{i:02d}", f"ACC-{k:02d}-{i % 8}", b + 200, "HIGH_TEMPERATURE", "WARNING")
        add(f"ONU-{k:02d}-07", f"ACC-{k:02d}-7", b + 210, "FAN_FAILURE", "CLEARED")  # no active alarm
        add(olt, f"AGG-{k % 4}", b + 250, "EQUIPMENT_FAILURE", "CLEARED")
        for i in (3, 40):
            add(f"ONU-{k:02d}-{i:02d}", f"ACC-{k:02d}-{i % 8}", b + 260, "HIGH_TEMPERATURE", "CLEARED")
    # arrival order: event time, with a little jitter inside the same second
    alarms.sort(key=lambda a: (a["event_time"] // SEC, rng.random()))
    return alarms


def run():
    topo = build_topology()
    corr = Correlator(topology=topo)
    events, dispositions = [], Counter()
    for a in storm():
        out = corr.process(a)
        dispositions[out.disposition] += 1
        events.extend(out.events)
    return corr, events, dispositions


def test_storm_compresses_and_loses_nothing():
    alarms = storm()
    assert len(alarms) >= 10_000
    raises = [a["alarm_id"] for a in alarms if a["severity"] != "CLEARED"]

    started = time.perf_counter()
    corr, events, disp = run()
    elapsed = time.perf_counter() - started
    assert elapsed < 30, elapsed

    last = {}
    for e in events:
        last[e["incident_id"]] = e
    merged = {i for i, e in last.items() if e["change"] == "MERGED"}
    surviving = {i: e for i, e in last.items() if e["change"] != "MERGED"}

    # one incident per OLT outage plus the 2 unrelated local faults per block
    assert len(surviving) == N_OLT + 2 * N_OLT
    olt_incidents = {i: e for i, e in surviving.items() if e["root_ne_id"].startswith("OLT-")}
    assert len(olt_incidents) == N_OLT
    # every ONU LOS that came before its OLT's alarm was merged into it
    assert len(merged) == (N_OLT // 2) * N_ONU
    assert all(last[i]["merged_into"] in olt_incidents for i in merged)
    # everything was cleared at the end
    assert all(e["change"] == "CLEARED" for e in surviving.values())
    assert not corr.state.open_roots

    for e in olt_incidents.values():
        assert e["affected_subscribers"] == N_ONU * SUBS_PER_ONU
        assert e["affected_services"] == ["BROADBAND", "IPTV", "VOICE"]
        assert len(e["alarm_ids"]) == 1 + 4 * N_ONU

    # no raw alarm lost: every raise is listed by exactly one surviving incident
    listed = Counter(a for e in surviving.values() for a in e["alarm_ids"])
    assert set(listed) == set(raises)
    assert max(listed.values()) == 1

    assert disp[C.DEDUP] == 2 * N_OLT * N_ONU
    assert disp[C.CLEAR_NO_ACTIVE] == N_OLT
    assert disp[C.CLEARED_ROOT] == N_OLT + 2 * N_OLT
    assert sum(disp.values()) == len(alarms)

    # bounded: incidents closed more than an hour (event time) before the end are gone
    assert len(corr.state.incidents) < len(last) / 2
    assert len(corr.state.seen) < len(alarms) / 2


def test_storm_is_deterministic():
    _, first, _ = run()
    _, second, _ = run()
    assert first == second
