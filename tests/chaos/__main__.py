"""``make chaos``: run the fault cases, write ``bench/results/chaos.json``, print a table.

``TELBUS_CHAOS_ONLY=worker_kill,sink_kill`` runs a subset, ``TELBUS_CHAOS_RATE`` sets the
load (records/s, all topics; default 300: the broker, worker, sink and this load share
the machine's cores). The suite has one deadline (``TELBUS_CHAOS_DEADLINE_S``, default
900 s) and a watchdog that tears everything down and exits 2 if it is passed. Exit status
0 only when every case that ran balanced its accounts.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter

from telbus import config

def _cases():
    from tests.chaos import faults

    return [("broker_kill", faults.broker_kill), ("broker_pause", faults.broker_pause),
            ("worker_kill", faults.worker_kill), ("sink_kill", faults.sink_kill),
            ("two_workers_one_killed", faults.two_workers_one_killed),
            ("clickhouse_outage", faults.clickhouse_outage)]       # last: it leaves the sink in server mode


def _restore(ctx) -> None:
    """Bring back whatever a failed case left down, so the next case starts whole."""
    if ctx.stack.broker_pid() is None:
        ctx.stack.restart_broker()
    for name in ("sink", ctx.worker):
        p = ctx.stack.procs.get(name)
        if p is not None and (p.proc is None or p.proc.poll() is not None):
            p.start(ready_timeout=180)


def _watchdog(stack, seconds: float) -> threading.Timer:
    def fire():
        print(f"chaos: suite deadline ({seconds:.0f}s) passed; tearing down", file=sys.stderr, flush=True)
        try:
            stack.stop()
        finally:
            os._exit(2)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def main() -> int:
    from tests.chaos import cases, report
    from tests.chaos.env import ChaosStack
    from tests.chaos.load import Load, RatedWatcher
    from tests.chaos.monitor import Monitor

    only = {s.strip() for s in os.environ.get("TELBUS_CHAOS_ONLY", "").split(",") if s.strip()}
    rate = float(os.environ.get("TELBUS_CHAOS_RATE", "300"))
    budget = float(os.environ.get("TELBUS_CHAOS_DEADLINE_S", "900"))
    selected = [(n, f) for n, f in _cases() if not only or n in only]
    unknown = only - {n for n, _ in _cases()}
    if unknown:
        print(f"unknown case(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    stack = ChaosStack(config.ROOT / ".data" / "chaos")
    dog = _watchdog(stack, budget + 120)
    results, load, watcher, mon = [], None, None, None
    try:
        stack.start()
        print(f"chaos: broker {stack.broker.bootstrap} (pid {stack.broker_pid()}), data {stack.root}", flush=True)
        stack.launch(stack.worker("worker", "1"))
        stack.launch(stack.sink())
        stack.supervise()
        print(f"chaos: worker and sink ready after {time.monotonic() - t0:.0f}s; load {rate:g} records/s",
              flush=True)
        load, watcher = Load(rate), RatedWatcher()
        load.start()
        watcher.start()
        mon = Monitor(load, watcher).start()
        ref = Counter(t for t, _k, _e in stack.reference)
        ctx = cases.Ctx(stack, load, watcher, mon, rate, t0 + budget, dict(ref))
        for name, inject in selected:
            if time.monotonic() > ctx.deadline - 60:
                results.append({"case": name, "run": False, "ok": False, "reason": "suite deadline reached"})
                continue
            print(f"chaos: {name} ...", flush=True)
            res = cases.run(ctx, name, inject)
            results.append(res)
            print("chaos: " + report.line(res), flush=True)
            if not res["ok"]:
                _restore(ctx)
    except Exception as exc:   # set-up or restore failed: still report and tear down
        import traceback

        traceback.print_exc()
        results.append({"case": "suite", "run": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        for part in (mon, load, watcher):
            if part is not None:
                part.quit()
        stack.stop()
        dog.cancel()
    path = report.write(results, rate, time.monotonic() - t0)
    print(report.table(results))
    print(f"chaos: {path.relative_to(config.ROOT)} ({time.monotonic() - t0:.0f}s)")
    ran = [r for r in results if r.get("run")]
    return 0 if ran and all(r["ok"] for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
