"""One case: warm up under load, inject the fault, recover, keep the load going, stop it,
wait for the stack to catch up, then account for everything.

Figures (all measured here, per case):
* ``recover_s`` -- from the end of the fault (process relaunched / broker answering /
  broker resumed / victim killed) until the rating backlog is back under two seconds'
  worth of CDRs for good; ``sink_recover_s`` likewise for the sink group's lag;
* ``delayed`` -- CDRs of this case whose RatedCdr appeared more than ``DELAY_S`` after
  they were sent (steady state here is well under a second), with ``latency_p50/p99/max``;
* ``orders_delayed`` / ``order_latency_max_s`` -- the same for the first OrderStatus of
  each order;
* ``peak_backlog`` / ``peak_sink_lag`` -- the highest of each signal from the fault on,
  ``peak_sink_lag_by_topic`` where the sink's lag sat at its peak;
* ``exits_relaunched`` -- processes that stopped on their own and the supervisor relaunched.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.chaos import accounting, monitor
from tests.chaos.load import CDR, ORDER
from tests.helpers import wait_until

WARM_S = 10.0        # outputs flowing before the fault
AFTER_S = 15.0       # load kept on after recovery
CASE_S = 240.0       # hard bound of one case
DELAY_S = 5.0


@dataclass
class Ctx:
    stack: object
    load: object
    watcher: object
    monitor: object
    rate: float
    deadline: float                  # the whole suite's
    reference_counts: dict
    worker: str = "worker"           # the worker the next fault hits
    poller: object = None
    case_deadline: float = 0.0
    notes: list = field(default_factory=list)

    def remaining(self) -> float:
        return max(1.0, min(self.deadline, self.case_deadline) - time.monotonic())


def _cdr_rate(ctx) -> float:
    from tests.chaos.load import MIX

    return ctx.rate * MIX.count(CDR) / len(MIX)


def wait_caught_up(ctx) -> dict:
    """Conditions, each with the case's deadline: the load delivered everything, the
    watcher saw every CDR rated, the processors' groups consumed every input, the sink's
    audit shows nothing behind. Returns the last sink audit."""
    from telbus.demo_commands import pending_inputs

    load = ctx.load
    t = time.monotonic()
    wait_until(lambda: sum(load.delivered.values()) + len(load.failed) >= sum(map(len, load.sent.values())),
               ctx.remaining(), 0.2, "every record delivered")
    wait_until(lambda: len(ctx.watcher.first_seen) >= len(load.sent[CDR]), ctx.remaining(), 0.2,
               "every CDR rated")
    wait_until(lambda: pending_inputs() == 0, ctx.remaining(), 0.5, "processors caught up")
    wait_until(lambda: (ctx.monitor.sink_lag[-1][1] or 0) <= 200 if ctx.monitor.sink_lag else False,
               ctx.remaining(), 0.5, "sink caught up")
    holder = {}
    if not _sink_up(ctx):
        return None                            # never open the embedded store ourselves

    def audited():
        res = holder["res"] = accounting.sink_audit()
        return res["ok"] and not any(r.get("behind", 0) > 0 for r in res["topics"])

    try:
        wait_until(audited, ctx.remaining(), 2.0, "sink audit with nothing behind")
    except AssertionError:
        pass                                   # the accounting reports what is behind
    ctx.notes.append(f"caught up in {time.monotonic() - t:.1f}s")
    return holder.get("res")


def figures(ctx, fault: dict, t_warm: float, t_stop: float, t_done: float) -> dict:
    load, watcher, mon = ctx.load, ctx.watcher, ctx.monitor
    thr_rating = max(100, int(2 * _cdr_rate(ctx)))
    thr_sink = max(300, int(3 * ctx.rate))
    rec = monitor.recovered_at(mon.backlog, fault["start"], t_done, thr_rating)
    srec = monitor.recovered_at(mon.sink_lag, fault["start"], t_done, thr_sink)
    lat = sorted(watcher.first_seen[c] - s for c, s in load.sent[CDR].items()
                 if t_warm <= s <= t_stop and c in watcher.first_seen)
    olat = sorted(watcher.order_seen[o] - s for o, s in load.sent[ORDER].items()
                  if t_warm <= s <= t_stop and o in watcher.order_seen)
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None  # noqa: E731
    return {
        "fault_s": round(fault["end"] - fault["start"], 1),
        "recover_s": None if rec is None else round(max(0.0, rec - fault["end"]), 1),
        "sink_recover_s": None if srec is None else round(max(0.0, srec - fault["end"]), 1),
        "cdrs_in_case": len(lat),
        "delayed": sum(1 for x in lat if x > DELAY_S),
        "latency_p50_s": pct(0.5), "latency_p99_s": pct(0.99), "latency_max_s": round(lat[-1], 2) if lat else None,
        "peak_backlog": monitor.peak(mon.backlog, fault["start"], t_done),
        "peak_sink_lag": monitor.peak(mon.sink_lag, fault["start"], t_done),
        "peak_sink_lag_by_topic": monitor.peak_topics(mon.sink_lag_topics, fault["start"], t_done),
        "orders_in_case": len(olat), "orders_delayed": sum(1 for x in olat if x > DELAY_S),
        "order_latency_max_s": round(olat[-1], 2) if olat else None,
        "thresholds": {"backlog": thr_rating, "sink_lag": thr_sink},
    }


def run(ctx, name: str, inject) -> dict:
    ctx.case_deadline = time.monotonic() + CASE_S
    ctx.notes = []
    out: dict = {"case": name, "run": True}
    load, watcher = ctx.load, ctx.watcher
    t_warm = time.monotonic()
    load.resume()
    try:
        n0 = len(watcher.first_seen)
        wait_until(lambda: len(watcher.first_seen) - n0 >= WARM_S * _cdr_rate(ctx) * 0.8
                   and time.monotonic() - t_warm >= WARM_S, ctx.remaining(), 0.2, "outputs flowing (warm-up)")
        fault = inject(ctx)
        out.update({k: v for k, v in fault.items() if k not in ("start", "end")})
        thr = max(100, int(2 * _cdr_rate(ctx)))
        wait_until(lambda: time.monotonic() - fault["end"] >= AFTER_S
                   and ctx.load.sent_cdrs() - len(watcher.first_seen) <= thr,
                   max(1.0, ctx.remaining() - 60), 0.5, "rating back to normal")
    except AssertionError as exc:
        out["error"] = str(exc)
        fault = locals().get("fault") or {"start": t_warm, "end": time.monotonic()}
    finally:
        t_stop = time.monotonic()
        load.pause()
    try:
        res = wait_caught_up(ctx)
    except AssertionError as exc:
        out.setdefault("error", str(exc))
        res = None
    t_done = time.monotonic()
    out.update(figures(ctx, fault, t_warm, t_stop, t_done))
    checks = {"rating": accounting.check_rating(load), "orders": accounting.check_orders(load)}
    checks["sink"] = accounting.check_sink(load, ctx.reference_counts, res) if _sink_up(ctx) else \
        {"ok": False, "problems": ["sink not running"]}
    if ctx.poller is not None:
        ctx.poller.quit()
        from tests.chaos.views import check_views

        checks["views"] = {"ok": ctx.poller.failed == 0, "lookups_ok": ctx.poller.ok,
                           "lookups_failed": ctx.poller.failed}
        checks["views_after_takeover"] = check_views(ctx.stack.views_url(ctx.worker), load.subscribers)
        ctx.poller = None
    exits = [dict(e, at=round(e["at"] - fault["start"], 1)) for e in ctx.stack.exits if e["at"] >= t_warm]
    out["exits_relaunched"] = exits        # processes that stopped on their own (at: s after the fault)
    out["checks"] = checks
    out["ok"] = "error" not in out and all(c["ok"] for c in checks.values())
    out["seconds"] = round(time.monotonic() - t_warm, 1)
    out["notes"] = list(ctx.notes)
    return out


def _sink_up(ctx) -> bool:
    p = ctx.stack.procs.get("sink")
    return p is not None and p.proc is not None and p.proc.poll() is None
