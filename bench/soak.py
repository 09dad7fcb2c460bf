"""``make soak``: the whole pipeline under steady load for 20 minutes; is it flat?

A private broker under ``.data/soak`` with ``telbus worker`` (every processor) and
``telbus sink`` started from here. First a short ramp measures the *sustainable* maximum
of this pipeline on this machine: a backlog is published and the CDRs per second that
the slowest of the CDR readers (rating, fraud, sink) gets through, while all share the
cores with each other, the broker and this load generator, is the maximum. (R3's ~13,000 CDR/s in
``bench/results/r3_worker_exactly_once.json`` is the rating loop alone on an idle machine;
half of that would overload the full pipeline and measure a growing backlog, not a soak.)
Then the demo mix is offered at half that maximum for the soak's duration.

Every ~10 s: RSS of broker, worker, sink and this process, consumer lag per group,
rates. Verdict over the second half (the first half is warm-up: JVM heap touched, state
windows filled, caches sized): memory flat = each process's least-squares RSS slope is
below the bound; lag bounded = each group's lag stays below the bound and does not trend
up. At the end the load stops, the pipeline drains, and the accounting must agree: every
CDR rated exactly once and the store holding each Kafka record once (``telbus audit
sink``). Exit 1 when any of it fails.

Settings: ``TELBUS_SOAK_SECONDS`` (1200), ``TELBUS_SOAK_RATE`` (CDR/s; skips the ramp),
``TELBUS_SOAK_RAMP_SECONDS`` (30), ``TELBUS_SOAK_SUBSCRIBERS`` (20,000),
``TELBUS_SOAK_EVENT_DAYS`` (30), ``TELBUS_SOAK_SAMPLE_SECONDS`` (10),
``TELBUS_SOAK_MAX_SLOPE_MIB`` (MiB per 10 min, 16), ``TELBUS_SOAK_MAX_LAG_SECONDS``
(lag bound in seconds of offered input, 30). ``python -m bench.soak report`` prints the
README's table from the last ``soak.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from telbus import config

PROCESSOR_GROUPS = ("telbus-subscriptions", "telbus-rating", "telbus-fraud", "telbus-alarms-in")
SINK_GROUP = "telbus-sink"
#: The groups that read every CDR: the slowest of them while all run is the pipeline's maximum.
CDR_READERS = ("telbus-rating", "telbus-fraud", SINK_GROUP)
R3_RESULT = config.ROOT / "bench" / "results" / "r3_worker_exactly_once.json"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def rss_mib(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per 600 s."""
    pts = [(t, v) for t, v in points if v is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    if not den:
        return None
    return round(sum((t - mt) * (v - mv) for t, v in pts) / den * 600, 2)


class LagReader:
    """Total lag per group on the topics it has committed on (a group's consumer reads
    only some inputs; the others would count as all-lag). Never joins the groups."""

    def __init__(self):
        import topics
        from telbus import kafka

        self.inputs = [t.name for t in topics.contract_topics("input")]
        self.all = [t.name for t in topics.contract_topics()]
        self.consumers = {g: kafka.consumer(g, **{"enable.partition.eof": False})
                          for g in (*PROCESSOR_GROUPS, SINK_GROUP)}

    def read(self) -> dict[str, dict]:
        from telbus import lag

        out = {}
        for g, c in self.consumers.items():
            res = lag.compute(g, self.all if g == SINK_GROUP else self.inputs, consumer=c)
            read = {t for (t, _p), r in res.items() if r["committed"] is not None}
            out[g] = {"lag": sum(r["lag"] for (t, _p), r in res.items() if t in read),
                      "partitions": sum(1 for (t, _p) in res if t in read),
                      "committed": sum(r["committed"] or 0 for r in res.values()),
                      "cdr_committed": sum(r["committed"] or 0 for (t, _p), r in res.items() if t == "net.cdr.raw")}
        return out

    def close(self) -> None:
        for c in self.consumers.values():
            c.close()


def ramp(events, seconds: float, procs: dict, lags: "LagReader", log=print) -> dict:
    """Publish a backlog the pipeline cannot clear in ``seconds``; the CDRs per second both
    rating and sink got through in that time is the pipeline's sustainable maximum."""
    from bench.soakload import Load

    ceiling = json.loads(R3_RESULT.read_text())["throughput_per_s"] if R3_RESULT.exists() else 15000
    backlog = int(ceiling * seconds)
    load = Load(events, rate=None, limit_cdrs=backlog)
    load.start()
    load.join()
    if load.error:
        raise RuntimeError(load.error)
    before, t0 = lags.read(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = lags.read(), time.monotonic() - t0
    rates = {g: round((after[g]["cdr_committed"] - before[g]["cdr_committed"]) / elapsed) for g in CDR_READERS}
    log(f"ramp: backlog {backlog} CDRs; CDR/s over {elapsed:.0f}s: " + ", ".join(f"{g} {r}" for g, r in rates.items()))
    return {"backlog_cdrs": backlog, "seconds": round(elapsed, 1), "cdr_per_s_by_group": rates,
            "max_cdr_per_s": min(rates.values()), "r3_alone_cdr_per_s": ceiling}


def drain(lags: "LagReader", timeout: float, log=print) -> float:
    """Wait until every group has caught up; seconds it took. A transactional topic ends in
    a commit marker no consumer commits past: one record of lag per partition is caught up."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        cur = lags.read()
        behind = {g: v["lag"] for g, v in cur.items() if v["lag"] > v["partitions"]}
        if not behind:
            return round(time.monotonic() - t0, 1)
        log("  draining: " + ", ".join(f"{g} {n}" for g, n in behind.items()))
        time.sleep(5)
    raise TimeoutError(f"pipeline not drained within {timeout:.0f}s")


def sample(t0: float, procs: dict, lags: "LagReader", load) -> dict:
    cur = lags.read()
    return {"t": round(time.monotonic() - t0, 1),
            "rss_mib": {name: rss_mib(pid) for name, pid in procs.items()},
            "lag": {g: v["lag"] for g, v in cur.items()},
            "cdrs_offered": load.cdrs, "events_offered": load.sent,
            "cdrs_rated": cur["telbus-rating"]["cdr_committed"], "sink_committed": cur[SINK_GROUP]["committed"],
            "event_time_ms": load.last_event_time}


def verdict(samples: list[dict], rate: float, max_slope: float, max_lag_s: float) -> dict:
    half = samples[-1]["t"] / 2
    second = [s for s in samples if s["t"] >= half]
    lag_bound = int(rate * max_lag_s)
    slopes = {name: slope_per_10min([(s["t"], s["rss_mib"][name]) for s in second])
              for name in samples[0]["rss_mib"]}
    memory_ok = all(v is not None and v < max_slope for v in slopes.values())
    lag = {}
    for g in samples[0]["lag"]:
        pts = [(s["t"], s["lag"][g]) for s in second]
        lag_slope = slope_per_10min(pts)
        lag[g] = {"max_second_half": max(v for _, v in pts), "last": pts[-1][1], "slope_per_10min": lag_slope,
                  "ok": max(v for _, v in pts) <= lag_bound and (lag_slope is None or lag_slope < lag_bound)}
    span = second[-1]["t"] - second[0]["t"] if len(second) > 1 else 0
    done = second[-1]["cdrs_rated"] - second[0]["cdrs_rated"]
    return {"second_half_from_s": round(half, 1), "rss_slope_mib_per_10min": slopes,
            "max_slope_mib_per_10min": max_slope, "memory_flat": memory_ok,
            "lag_bound_records": lag_bound, "lag": lag, "lag_bounded": all(v["ok"] for v in lag.values()),
            "rated_cdr_per_s_second_half": round(done / span) if span else None}


def accounting(log=print) -> dict:
    """After the drain: CDRs in, RatedCdrs out, both once in the store; ``telbus audit sink``."""
    from tests.helpers import cli

    names = ("cdrs_stored", "cdr_ids", "rated_stored", "rated_cdr_ids")
    q = ("SELECT (SELECT count() FROM net_cdr_raw FINAL) AS cdrs_stored, "
         "(SELECT uniqExact(cdr_id) FROM net_cdr_raw FINAL) AS cdr_ids, "
         "(SELECT count() FROM bss_cdr_rated FINAL) AS rated_stored, "
         "(SELECT uniqExact(cdr_id) FROM bss_cdr_rated FINAL) AS rated_cdr_ids")
    res = cli("query", q, "--format", "json", timeout=600)
    out: dict = {"query_exit": res.returncode}
    try:
        row = json.loads(res.stdout)[0]
        out.update({k: int(row[k]) for k in names})
    except (ValueError, IndexError, KeyError, TypeError):
        out["query_output"] = (res.stdout + res.stderr)[-2000:]
    audit = cli("audit", "sink", timeout=1800)
    out["audit_sink_exit"] = audit.returncode
    out["audit_sink_tail"] = audit.stdout.strip().splitlines()[-3:]
    n = out.get("cdrs_stored")
    out["rated_once"] = bool(n) and out.get("cdr_ids") == n == out.get("rated_stored") == out.get("rated_cdr_ids")
    out["ok"] = out["rated_once"] and audit.returncode == 0
    log(f"accounting: {json.dumps({k: v for k, v in out.items() if k != 'audit_sink_tail'})}")
    return out


def main() -> int:
    duration = float(_env("TELBUS_SOAK_SECONDS", "1200"))
    fixed_rate = os.environ.get("TELBUS_SOAK_RATE")
    ramp_s = float(_env("TELBUS_SOAK_RAMP_SECONDS", "30"))
    subs = int(_env("TELBUS_SOAK_SUBSCRIBERS", "20000"))
    hours = int(float(_env("TELBUS_SOAK_EVENT_DAYS", "30")) * 24)
    every = float(_env("TELBUS_SOAK_SAMPLE_SECONDS", "10"))
    max_slope = float(_env("TELBUS_SOAK_MAX_SLOPE_MIB", "16"))
    max_lag_s = float(_env("TELBUS_SOAK_MAX_LAG_SECONDS", "30"))

    soak_dir = config.ROOT / ".data" / "soak"
    shutil.rmtree(soak_dir, ignore_errors=True)
    os.environ["TELBUS_DATA_DIR"] = str(soak_dir)
    os.environ.pop("TELBUS_KAFKA_BOOTSTRAP", None)
    for name in ("TELBUS_WORKER_APP_ID", "TELBUS_RATING_GROUP", "TELBUS_SINK_GROUP", "TELBUS_WORKER_AGENTS"):
        os.environ.pop(name, None)   # the stack's own groups: the ones lag and audit look at

    from telbus.localbroker import LocalBroker

    broker = LocalBroker(soak_dir / "kafka")
    broker.start()
    os.environ["TELBUS_KAFKA_BOOTSTRAP"] = broker.bootstrap
    print(f"soak broker at {broker.bootstrap}")
    procs = []
    try:
        return _soak(broker, procs, duration, fixed_rate, ramp_s, subs, hours, every, max_slope, max_lag_s)
    finally:
        for p in reversed(procs):
            p.stop(60)
        broker.stop()


def _soak(broker, procs, duration, fixed_rate, ramp_s, subs, hours, every, max_slope, max_lag_s) -> int:
    import topics
    from bench import common
    from bench.soakload import Load, reference, traffic
    from telbus import kafka
    from telbus.demo_commands import publish
    from tests.helpers import Proc

    topics.inspect(kafka.admin(), create=True)
    kafka.publish_schemas()
    publish(reference(subs, hours))
    logs = config.data_dir() / "logs"
    for name, argv in (("soak-worker", ["worker", "--loglevel", "warning"]), ("soak-sink", ["sink"])):
        procs.append(Proc(name, argv, {"TELBUS_WORKER_WEB_PORT": "0"}, log_dir=logs).start(ready_timeout=300))
    pids = {"broker": broker.running_pid(), "worker": procs[0].pid, "sink": procs[1].pid, "load": os.getpid()}
    lags = LagReader()
    drain(lags, 300)
    # Plan the stream for the fastest rate this run could use (R3's, or the fixed one): at
    # a lower rate the run covers proportionally less event time (reported below).
    r3 = json.loads(R3_RESULT.read_text())["throughput_per_s"] if R3_RESULT.exists() else 15000
    planned = float(fixed_rate) if fixed_rate else r3 / 2
    events = traffic(subs, int(planned * duration + r3 * ramp_s), hours)
    result: dict = {"duration_s": duration, "subscribers": subs, "planned_event_days": hours / 24,
                    "bounds": {"max_rss_slope_mib_per_10min": max_slope, "max_lag_seconds_of_input": max_lag_s}}
    if fixed_rate:
        rate = float(fixed_rate)
        result["rate_source"] = "TELBUS_SOAK_RATE"
    else:
        result["ramp"] = ramp(events, ramp_s, pids, lags)
        result["ramp"]["drain_s"] = drain(lags, 900)
        rate = max(1.0, result["ramp"]["max_cdr_per_s"] / 2)
        result["rate_source"] = "half the ramp's sustainable maximum (slowest of rating, fraud, sink)"
    result["rate_cdr_per_s"] = round(rate)
    print(f"soak: {rate:.0f} CDR/s for {duration:.0f}s, sampling every {every:.0f}s")
    load = Load(events, rate=rate)
    t0 = time.monotonic()
    load.start()
    samples = []
    while time.monotonic() - t0 < duration:
        time.sleep(max(0.0, every - (time.monotonic() - t0) % every))
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited {p.proc.returncode}:\n{p.log_tail()}")
        if not load.is_alive():
            raise RuntimeError(f"load generator stopped early: {load.error or 'stream exhausted'}")
        s = sample(t0, pids, lags, load)
        samples.append(s)
        print(f"  t={s['t']:>6.0f}s rss " + " ".join(f"{k}={v}" for k, v in s["rss_mib"].items())
              + f" MiB; lag " + " ".join(f"{g.removeprefix('telbus-') or 'app'}={v}" for g, v in s["lag"].items()))
    load.stop()
    if load.error:
        raise RuntimeError(load.error)
    result["offered"] = {"cdrs": load.cdrs, "events": load.sent,
                         "achieved_cdr_per_s": round(load.cdrs / max(samples[-1]["t"], 1)),
                         "event_days_covered": round((load.last_event_time - _base_ms()) / 86_400_000, 1)}
    result["verdict"] = verdict(samples, rate, max_slope, max_lag_s)
    result["drain_after_s"] = drain(lags, 900)
    lags.close()
    result["accounting"] = accounting()
    v = result["verdict"]
    result["passed"] = bool(v["memory_flat"] and v["lag_bounded"] and result["accounting"]["ok"])
    result["samples"] = samples
    result["pids"] = pids
    common.write("soak", result)
    print(f"soak {'PASSED' if result['passed'] else 'FAILED'}: memory flat={v['memory_flat']} "
          f"slopes={v['rss_slope_mib_per_10min']} lag bounded={v['lag_bounded']} "
          f"accounting={result['accounting']['ok']}")
    return 0 if result["passed"] else 1


def report(path: Path = config.ROOT / "bench" / "results" / "soak.json") -> str:
    """The README's soak table from ``soak.json`` (``python -m bench.soak report``)."""
    r = json.loads(path.read_text())
    v, a = r["verdict"], r["accounting"]
    first = {k: v for k, v in r["samples"][0]["rss_mib"].items()}
    last = {k: v for k, v in r["samples"][-1]["rss_mib"].items()}
    ramp = r.get("ramp", {})
    lines = [
        f"Measured {r['measured_at']}: {r['duration_s'] / 60:.1f} min at {r['rate_cdr_per_s']:,} CDR/s "
        f"({r['rate_source']}; ramp CDR/s: "
        + ", ".join(f"{g} {n:,}" for g, n in ramp.get("cdr_per_s_by_group", {}).items())
        + f"), {r['offered']['cdrs']:,} CDRs and "
        f"{r['offered']['events'] - r['offered']['cdrs']:,} other demo events covering "
        f"{r['offered']['event_days_covered']} days of event time; verdict over the second half "
        f"(from {v['second_half_from_s'] / 60:.1f} min). **{'PASSED' if r['passed'] else 'FAILED'}**.",
        "",
        "| process | RSS first sample → last (MiB) | slope, second half (MiB / 10 min) |",
        "|---|---|---|",
    ]
    for name, slope in v["rss_slope_mib_per_10min"].items():
        lines.append(f"| {name} | {first[name]} → {last[name]} | {slope} (bound < {v['max_slope_mib_per_10min']}) |")
    lines += ["", "| group | max lag, second half | lag at the end | slope (records / 10 min) |", "|---|---|---|---|"]
    for g, lg in v["lag"].items():
        lines.append(f"| {g} | {lg['max_second_half']:,} | {lg['last']:,} | {lg['slope_per_10min']} |")
    lines += ["", f"Lag bound: {v['lag_bound_records']:,} records ({r['bounds']['max_lag_seconds_of_input']:.0f} s of "
              f"offered input). Accounting after the drain: {a.get('cdrs_stored', '?'):,} CDRs stored, "
              f"{a.get('rated_stored', '?'):,} RatedCdrs stored, one per cdr_id: {a['rated_once']}; "
              f"`telbus audit sink` exit {a['audit_sink_exit']}."]
    return "\n".join(lines)


def _base_ms() -> int:
    from telbus import demo

    return demo.DEFAULT_BASE_TIME_MS


if __name__ == "__main__":
    if sys.argv[1:] == ["report"]:
        print(report())
        sys.exit(0)
    sys.exit(main())
