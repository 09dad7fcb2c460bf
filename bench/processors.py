"""Fraud and alarm benchmarks: a worker running one processor over a published backlog.

Throughput is input records consumed per second from the worker being ready until its
groups have committed every input partition to its end; CPU is the worker process's.
"""
from __future__ import annotations

import time

from bench.common import cpu_seconds_pid
from telbus import config, kafka

SEC = 1000


def _done(groups_topics: dict[str, list[str]]) -> tuple[bool, int]:
    """(every group committed every partition of its topics to the end, records left)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    admin = kafka.admin()
    c = kafka.consumer(None)
    left = 0
    try:
        md = c.list_topics(timeout=10)
        for group, names in groups_topics.items():
            tps = [TopicPartition(t, p) for t in names if t in md.topics for p in md.topics[t].partitions]
            try:
                res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result()
                committed = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}
            except Exception:
                committed = {}
            for tp in tps:
                hi = kafka.watermarks(c, tp)[1]
                done = committed.get((tp.topic, tp.partition), -1)
                # a transactional topic's end offset includes one commit marker
                left += max(0, hi - max(done, 0) - (1 if done > 0 and hi - done == 1 else 0)) if hi else 0
        return left == 0, left
    finally:
        c.close()


def start_worker(agent: str):
    from tests.helpers import Proc

    return Proc(f"bench-{agent}", ["worker", "--loglevel", "warning"],
                {"TELBUS_WORKER_AGENTS": agent, "TELBUS_WORKER_WEB_PORT": "0",
                 "TELBUS_WORKER_ID": f"bench-{agent}"}, log_dir=config.data_dir() / "logs").start(ready_timeout=300)


def wait_done(proc, agent: str, groups_topics: dict[str, list[str]], log=print) -> None:
    t0 = last = time.monotonic()
    while True:
        done, left = _done(groups_topics)
        if done:
            return
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{agent} worker died:\n{proc.log_tail()}")
        if time.monotonic() - last > 30:
            log(f"    {agent}: {left} records to go")
            last = time.monotonic()
        if time.monotonic() - t0 > 3600:
            raise TimeoutError(f"{agent} did not finish within an hour")
        time.sleep(0.5)


def measure(proc, agent: str, groups_topics: dict[str, list[str]], records: int, publish_first=None,
            log=print) -> dict:
    """Time from now (optionally publishing ``publish_first``) until the groups are done."""
    from telbus.demo_commands import publish

    t0, cpu0 = time.monotonic(), cpu_seconds_pid(proc.pid)
    if publish_first:
        publish(publish_first)
    wait_done(proc, agent, groups_topics, log)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds_pid(proc.pid) - cpu0
    return {"records": records, "seconds": round(elapsed, 1), "throughput_per_s": round(records / elapsed),
            "cpu_us_per_record": round(cpu / records * 1e6, 1),
            "note": "includes the time the worker's groups take to commit their last batch (poll interval 0.5 s)"}


def fraud(subscribers: int, cdrs: int, log=print) -> dict:
    from telbus import demo
    from telbus.demo_commands import publish

    w = demo.generate(seed=7, subscribers=subscribers, cdrs=cdrs, fraud=True)
    inputs = ["sec.login.events", "net.cdr.raw", "bss.subscriber.events"]
    events = [(t, k, e) for t, k, e in w.events if t in inputs]
    publish(events)
    proc = start_worker("fraud")
    try:
        res = measure(proc, "fraud", {"telbus-fraud": inputs}, len(events), log=log)
    finally:
        proc.stop()
    res.update({"inputs": {t: sum(1 for x in events if x[0] == t) for t in inputs},
                "workload": f"demo seed 7, {subscribers} subscribers, {cdrs} background CDRs, fraud injected"})
    return res


def storm_events(olts: int = 40, onus: int = 64, outages: int = 80, t0: int = 1_795_000_000_000):
    """Topology (router -> OLTs -> ONUs over 4 aggregation sites) and a storm of OLT
    outages: each raises its ONUs' loss-of-signal alarms, then the OLT's own 20 s later,
    then clears everything 10 min on. Deterministic."""
    topo = [("oss.topology", "CORE-R1", {
        "event_type": "NetworkElement", "event_id": "ne-CORE-R1", "event_time": t0 - 86_400_000,
        "source": "NMS-HW", "ne_id": "CORE-R1", "ne_type": "ROUTER", "parent_ne_id": None,
        "site_id": "CORE", "services": ["IP"]})]
    for k in range(olts):
        olt = f"OLT-{k:02d}"
        topo.append(("oss.topology", olt, {
            "event_type": "NetworkElement", "event_id": f"ne-{olt}", "event_time": t0 - 86_400_000,
            "source": "NMS-HW", "ne_id": olt, "ne_type": "OLT", "parent_ne_id": "CORE-R1",
            "site_id": f"AGG-{k % 4}", "services": ["BROADBAND", "IPTV"]}))
        for j in range(onus):
            onu = f"{olt}-ONU{j:02d}"
            topo.append(("oss.topology", onu, {
                "event_type": "NetworkElement", "event_id": f"ne-{onu}", "event_time": t0 - 86_400_000,
                "source": "NMS-HW", "ne_id": onu, "ne_type": "ONU", "parent_ne_id": olt,
                "site_id": f"ACC-{k:02d}", "services": ["BROADBAND", "VOICE"]}))
    alarms = []
    n = 0

    def alarm(t, ne, site, severity):
        nonlocal n
        n += 1
        return ("oss.alarm.raw", site, {
            "event_type": "Alarm", "event_id": f"alm-ev-{n}", "event_time": t, "source": "NMS-HW",
            "alarm_id": f"ALM-{n}", "ne_id": ne, "site_id": site, "probable_cause": "LOS",
            "severity": severity, "text": None})

    for o in range(outages):
        k = o % olts
        olt, t = f"OLT-{k:02d}", t0 + o * 300 * SEC
        for j in range(onus):
            alarms.append(alarm(t + j * 50, f"{olt}-ONU{j:02d}", f"ACC-{k:02d}", "MAJOR"))
        alarms.append(alarm(t + 20 * SEC, olt, f"AGG-{k % 4}", "CRITICAL"))
        for j in range(onus):
            alarms.append(alarm(t + 600 * SEC + j * 50, f"{olt}-ONU{j:02d}", f"ACC-{k:02d}", "CLEARED"))
        alarms.append(alarm(t + 620 * SEC, olt, f"AGG-{k % 4}", "CLEARED"))
    alarms.sort(key=lambda x: x[2]["event_time"])
    return topo, alarms, outages


def alarms(log=print) -> dict:
    from processors.alarms.agent import funnel_topic
    from telbus.demo_commands import publish

    topo, storm, outages = storm_events()
    groups = {"telbus-alarms-in": ["oss.alarm.raw", "oss.topology"], "telbus-alarms": [funnel_topic()]}
    publish(topo)
    proc = start_worker("alarms")
    try:
        wait_done(proc, "alarms", groups, log)          # the network is known before the storm
        res = measure(proc, "alarms", groups, len(storm), publish_first=storm, log=log)
    finally:
        proc.stop()
    from processors.alarms.report import read_all

    changes = [v for _p, _o, v in read_all("oss.incidents")]
    merged = {v["incident_id"] for v in changes if v["change"] == "MERGED"}
    # incidents an operator ends up with: those not merged into a root cause
    incidents = {v["incident_id"] for v in changes} - merged
    raises = sum(1 for _t, _k, e in storm if e["severity"] != "CLEARED")
    res.update({"raw_alarms": len(storm), "raised": raises, "cleared": len(storm) - raises,
                "olt_outages": outages, "incidents": len(incidents), "merged_symptom_incidents": len(merged),
                "compression_raw_alarms_per_incident": round(len(storm) / max(1, len(incidents)), 1)})
    return res
