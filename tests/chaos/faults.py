"""The faults, one function each: inject, then recover the way an operator (or a process
supervisor) would. Each returns when the fault is over, with its timestamps:
``start`` (fault injected), ``end`` (fault over: process relaunched, broker answering or
resumed) and what else it measured.
"""
from __future__ import annotations

import signal
import time

from telbus.localbroker import pid_alive
from tests.helpers import metric, wait_until

PAUSE_S = 30.0


def broker_kill(ctx) -> dict:
    pid = ctx.stack.broker_pid()
    start = time.monotonic()
    ctx.stack.broker.signal(signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 30, 0.05, "broker gone")
    start_s = ctx.stack.restart_broker()
    return {"start": start, "end": time.monotonic(), "broker_start_s": round(start_s, 1)}


def broker_pause(ctx) -> dict:
    start = time.monotonic()
    ctx.stack.broker.signal(signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)                 # the fault itself: the broker frozen for 30 s
    finally:
        ctx.stack.broker.signal(signal.SIGCONT)
    return {"start": start, "end": time.monotonic(), "paused_s": PAUSE_S}


def _kill_and_relaunch(ctx, name: str) -> dict:
    proc = ctx.stack.procs[name]
    with ctx.stack.hands_on(name):
        start = time.monotonic()
        proc.kill9()
        end = time.monotonic()
        proc.start(ready_timeout=min(180, ctx.remaining()))
    return {"start": start, "end": end, "ready_s": round(time.monotonic() - end, 1)}


def worker_kill(ctx) -> dict:
    return _kill_and_relaunch(ctx, ctx.worker)


def sink_kill(ctx) -> dict:
    return _kill_and_relaunch(ctx, "sink")


def group_members(group: str) -> int | None:
    """Members of a stable consumer group (None while it rebalances or is unreachable)."""
    from confluent_kafka import ConsumerGroupState

    from telbus import kafka

    try:
        admin = kafka.admin()      # kept referenced until the result is in
        d = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except Exception:
        return None
    return len(d.members) if d.state == ConsumerGroupState.STABLE else None


def two_workers_one_killed(ctx) -> dict:
    """A second worker joins the groups; once both share the partitions, the first one is
    killed and not brought back: the survivor must take over rating and subscription sync
    (static membership: after each group's 10 s session timeout), while its views go on
    answering throughout."""
    from tests.chaos.views import ViewPoller

    survivor = "worker-2"
    ctx.stack.launch(ctx.stack.worker(survivor, "2"), ready_timeout=min(180, ctx.remaining()))
    joined = time.monotonic()
    wait_until(lambda: group_members("telbus-rating") == 2 and group_members("telbus-subscriptions") == 2,
               min(120, ctx.remaining()), 0.5, "both workers in the rating and Faust groups")
    shared_s = round(time.monotonic() - joined, 1)
    poller = ViewPoller(ctx.stack.views_url(survivor), ctx.load.subscribers).start()
    ctx.poller = poller
    victim = ctx.stack.procs[ctx.worker]
    wait_until(lambda: len(ctx.watcher.first_seen) > ctx.load.sent_cdrs() - 2 * ctx.rate, 30, 0.2,
               "rating flowing on two workers")
    ctx.stack.unsupervise(ctx.worker)                # stays down: the survivor carries on
    start = time.monotonic()
    victim.kill9()
    ctx.worker = survivor
    wait_until(lambda: group_members("telbus-rating") == 1 and group_members("telbus-subscriptions") == 1,
               min(150, ctx.remaining()), 0.5, "the survivor alone in both groups")
    return {"start": start, "end": start, "groups_shared_after_s": shared_s,
            "survivor_alone_after_s": round(time.monotonic() - start, 1)}


def clickhouse_outage(ctx) -> dict:
    """The store taken away: the sink is moved to a ClickHouse server (same group; it
    re-imports the history into the empty server store from the store's own offsets) and,
    once it has caught up, the server is killed (kill -9) and kept away for 30 s, then
    started again on the same data and port. The sink must back off and retry without
    losing or duplicating a row; the case's accounting then audits the server store.
    Runs last: the sink stays in server mode."""
    import os

    server = ctx.stack.clickhouse_server()
    os.environ["TELBUS_CLICKHOUSE_DSN"] = server.dsn       # the accounting reads the server
    sink = ctx.stack.procs["sink"]
    with ctx.stack.hands_on("sink"):
        sink.stop()
        ctx.stack.procs["sink"] = sink = ctx.stack.sink(dsn=server.dsn)
        sink.start(ready_timeout=min(180, ctx.remaining()))
    metrics = sink.endpoints()["metrics"]
    threshold = max(300, int(3 * ctx.rate))
    # from the store's own offsets: the group's committed ones still say where the
    # embedded store was until the server-mode sink's first commit
    wait_until(lambda: _store_lag(server.dsn) <= threshold, min(180, ctx.remaining()), 1.0,
               "sink caught up in the server store")
    retries0 = metric(metrics, "telbus_sink_insert_retries_total")
    start = time.monotonic()
    server.kill()
    try:
        time.sleep(PAUSE_S)                 # the fault itself: no store for 30 s
        down = {"store_up_while_down": metric(metrics, "telbus_sink_store_up"),
                "sink_alive_while_down": sink.proc.poll() is None}
    finally:
        server.start()
    end = time.monotonic()
    wait_until(lambda: metric(metrics, "telbus_sink_store_up") == 1, min(120, ctx.remaining()), 0.5,
               "sink writing again")
    return {"start": start, "end": end, "store_down_s": PAUSE_S, **down,
            "insert_retries": int(metric(metrics, "telbus_sink_insert_retries_total") - retries0),
            "store_back_after_s": round(time.monotonic() - end, 1)}


def _store_lag(dsn: str) -> int:
    """Records of the contract topics beyond the offsets the sink recorded in the store."""
    from sinks.ddl import contract_topics
    from sinks.store import Store
    from tests.helpers import end_offsets

    st = Store(dsn, migrate=False)
    try:
        saved = st.load_offsets()
    finally:
        st.close()
    return sum(max(0, end - saved.get((t, p), 0)) for t in contract_topics() for p, end in end_offsets(t).items())
