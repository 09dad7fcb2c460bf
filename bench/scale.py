"""Scale-out: the rating loop in one ``telbus worker`` versus two in the same group.

Twelve partitions allow up to twelve workers per group; the question here is what a
second worker buys on *this* machine, where broker, workers and this measuring process
share two cores. So both runs read the same backlog with a group and state topic of
their own (fresh offsets, fresh state), and CPU is read from /proc of the worker pids:
if the second worker only splits the same two cores, throughput stays flat and the CPU
per CDR shows the cost of the extra process (a second state rebuild, its own
transactions, its own fetches).

Two workers: both start together in a fresh group and throughput counts from the moment
the group is stable with both holding partitions, so it is the two-worker rate only.
Rebalance: after the one-worker run has rated the backlog, a second worker joins that
group (its state is then full-size); the time from starting it to a stable group with
both members owning partitions is what an operator pays each time a worker is added.
"""
from __future__ import annotations

import os
import time
import uuid

from bench.common import cpu_seconds_pid
from telbus import config

CDR_TOPIC = "net.cdr.raw"


def load(n: int, subscribers: int) -> dict:
    from telbus import demo
    from telbus.demo_commands import publish

    publish(demo.reference_events(7, subscribers))
    t = time.monotonic()
    publish(demo.cdr_stream(7, n, subscribers))
    return {"cdrs": n, "subscribers": subscribers, "load_seconds": round(time.monotonic() - t, 1)}


def _worker(app_id: str, worker_id: str):
    from tests.helpers import Proc

    env = {"TELBUS_WORKER_APP_ID": app_id,
           "TELBUS_RATING_GROUP": f"{app_id}-rating", "TELBUS_RATING_STATE_TOPIC": f"{app_id}-rating-state",
           "TELBUS_WORKER_AGENTS": "rating", "TELBUS_WORKER_ID": worker_id, "TELBUS_WORKER_WEB_PORT": "0"}
    return Proc(f"{app_id}-{worker_id}", ["worker", "--loglevel", "warning"], env,
                log_dir=config.data_dir() / "logs")


_ADMIN = []


def _admin():
    """One admin client kept alive: a temporary one is collected before its future resolves."""
    if not _ADMIN:
        from telbus import kafka

        _ADMIN.append(kafka.admin())
    return _ADMIN[0]


def _members_with_cdr_partitions(group: str) -> int:
    """Members of the rating group that own at least one net.cdr.raw partition, once the
    group is stable (0 while it rebalances)."""
    from confluent_kafka import ConsumerGroupState

    try:
        desc = _admin().describe_consumer_groups([group])[group].result(10)
    except Exception:
        return 0
    if desc.state != ConsumerGroupState.STABLE:
        return 0
    return sum(1 for m in desc.members
               if any(tp.topic == CDR_TOPIC for tp in (m.assignment.topic_partitions if m.assignment else [])))


def _start_all(procs) -> None:
    """Start the worker processes at once (each start waits for its ready file)."""
    import threading

    errors = []

    def go(p):
        try:
            p.start(ready_timeout=300)
        except BaseException as exc:   # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _wait_members(group: str, k: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _members_with_cdr_partitions(group) < k:
        if time.monotonic() > deadline:
            raise RuntimeError(f"group {group} never stable with {k} members owning partitions")
        time.sleep(0.1)


def run(workers: int, n: int, join_after: bool = False, log=print) -> dict:
    """Rate the backlog of ``n`` CDRs with ``workers`` worker processes in one fresh group;
    with ``join_after``, then time one more worker joining that group."""
    from bench.worker import RatedWatcher, wait_rated

    watcher = RatedWatcher()
    watcher.start()
    watcher.ready.wait(30)
    app_id = f"scale{workers}-{uuid.uuid4().hex[:6]}"
    group = f"{app_id}-rating"
    procs = [_worker(app_id, str(i + 1)) for i in range(workers)]
    result: dict = {"workers": workers}
    try:
        _start_all(procs)
        _wait_members(group, workers)
        t0, c0 = time.monotonic(), watcher.count
        result["rated_before_measuring"] = c0
        cpu0 = {p.pid: cpu_seconds_pid(p.pid) for p in procs}
        wait_rated(watcher, n, procs, f"{workers} worker(s)", log)
        elapsed = time.monotonic() - t0
        cpu = [cpu_seconds_pid(pid) - c for pid, c in cpu0.items()]
        done = watcher.count - c0
        result.update({
            "records_measured": done, "seconds": round(elapsed, 1),
            "throughput_per_s": round(done / elapsed) if elapsed else 0,
            "cpu_us_per_record": round(sum(cpu) / max(done, 1) * 1e6, 1),
            "cpu_seconds_per_worker": [round(c, 1) for c in cpu],
            "cores_busy_in_workers": round(sum(cpu) / elapsed, 2) if elapsed else 0,
            "rated_total": watcher.count})
        if join_after:
            extra = _worker(app_id, str(workers + 1))
            procs.append(extra)
            t = time.monotonic()
            extra.start(ready_timeout=300)
            ready_s = time.monotonic() - t
            _wait_members(group, workers + 1)
            result["worker_joins"] = {"start_to_ready_s": round(ready_s, 1),
                                      "start_to_stable_group_s": round(time.monotonic() - t, 1)}
    finally:
        for p in procs:
            p.stop()
        watcher.stop()
    return result


def bench() -> dict:
    n = int(os.environ.get("TELBUS_BENCH_SCALE_CDRS", "300000"))
    subs = int(os.environ.get("TELBUS_BENCH_SUBSCRIBERS", "20000"))
    # Other work on the machine changes these figures: the load average is kept with them.
    out = {"partitions": 12, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
           **load(n, subs), "runs": {}}
    for k in (1, 2):
        print(f"  scale: {k} worker(s) on {n} CDRs")
        out["runs"][str(k)] = run(k, n, join_after=(k == 1))
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    one, two = out["runs"]["1"], out["runs"]["2"]
    out["speedup_2_vs_1"] = round(two["throughput_per_s"] / max(one["throughput_per_s"], 1), 2)
    out["note"] = ("one machine with 2 cores shared by the broker, the workers and the measuring "
                   "process; each run in a fresh rating group and state topic over the same backlog")
    return out
