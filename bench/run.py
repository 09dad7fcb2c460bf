"""``make bench``: every benchmark in one run, against a private local broker.

Writes ``bench/results/<name>.json``. Sizes: ``TELBUS_BENCH_CDRS`` (default 1,000,000),
``TELBUS_BENCH_SUBSCRIBERS`` (default 20,000: a realistic ~50 CDRs per subscriber a day),
``TELBUS_BENCH_ONLY`` (comma list of load,r1,r2,r3,sink,fraud,alarms,scale; the shared
1M-CDR broker is started only for the first five). Scale-out: ``TELBUS_BENCH_SCALE_CDRS``
(default 300,000) on a broker of its own, see ``bench/scale.py``.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from telbus import config


def main() -> int:
    n = int(os.environ.get("TELBUS_BENCH_CDRS", "1000000"))
    subs = int(os.environ.get("TELBUS_BENCH_SUBSCRIBERS", "20000"))
    only = {s.strip() for s in os.environ.get("TELBUS_BENCH_ONLY", "").split(",") if s.strip()}
    want = lambda name: not only or name in only  # noqa: E731

    bench_dir = config.ROOT / ".data" / "bench"
    shutil.rmtree(bench_dir, ignore_errors=True)
    os.environ["TELBUS_DATA_DIR"] = str(bench_dir)
    os.environ.pop("TELBUS_KAFKA_BOOTSTRAP", None)

    from telbus.localbroker import LocalBroker

    if any(want(name) for name in ("load", "r1", "r2", "r3", "sink")):
        broker = LocalBroker(bench_dir / "kafka")
        t = time.monotonic()
        broker.start()
        os.environ["TELBUS_KAFKA_BOOTSTRAP"] = broker.bootstrap
        print(f"bench broker at {broker.bootstrap} ({time.monotonic() - t:.1f}s)")
        try:
            _run(n, subs, want)
        finally:
            broker.stop()
    from bench import common
    from bench import processors as pbench

    if want("fraud"):
        fsubs = int(os.environ.get("TELBUS_BENCH_FRAUD_SUBSCRIBERS", "3000"))
        fcdrs = int(os.environ.get("TELBUS_BENCH_FRAUD_CDRS", "300000"))
        common.write("fraud", _fresh_broker_phase(bench_dir, "fraud", lambda: pbench.fraud(fsubs, fcdrs)))
    if want("alarms"):
        common.write("alarms", _fresh_broker_phase(bench_dir, "alarms", pbench.alarms))
    if want("scale"):
        from bench import scale

        common.write("scale", _fresh_broker_phase(bench_dir, "scale", scale.bench))
    return 0


def _run(n: int, subs: int, want) -> int:
    import topics
    from bench import common, loops
    from telbus import demo, kafka
    from telbus.demo_commands import publish

    topics.inspect(kafka.admin(), create=True)
    kafka.publish_schemas()
    ref = demo.reference_events(7, subs)
    publish(ref)
    t = time.monotonic()
    res = publish(demo.cdr_stream(7, n, subs))
    load_s = time.monotonic() - t
    common.write("load", {"cdrs": n, "subscribers": subs, "seconds": round(load_s, 1),
                          "producer_throughput_per_s": round(n / load_s),
                          "note": "telbus Publisher: demo generation + Avro encode + idempotent acks=all produce"})
    print(f"loaded {n} CDRs in {load_s:.1f}s")
    results = {}
    if want("r1"):
        results["r1"] = loops.consume_produce(n, "bench.r1.out")
        common.write("r1_bare_loop", results["r1"])
    if want("r2"):
        results["r2"] = loops.consume_produce(n, "bench.r2.out", loops.rating_transform(ref))
        common.write("r2_rating_loop", results["r2"])
    if want("r3"):
        from bench.worker import run_worker_bench

        counter = iter(range(10**9))

        def fresh_cdrs(k):
            base = next(counter) * 10**7
            out = []
            for topic, key, ev in demo.cdr_stream(11 + base, k, subs):
                ev = dict(ev, cdr_id=f"LAT-{base}-{ev['cdr_id']}", event_id=f"LAT-{base}-{ev['event_id']}")
                out.append((topic, key, ev))
            return out

        # The rating loop is transactional (there is no at-least-once money path): one
        # run, exactly once.
        for g in ("exactly_once",):
            backlog = common.total_end_offset("net.cdr.raw")
            r = run_worker_bench(g, backlog, 30, fresh_cdrs)
            if "r2" in results:
                r["ratio_to_r2"] = round(r["throughput_per_s"] / results["r2"]["throughput_per_s"], 3)
            results[f"r3_{g}"] = r
            common.write(f"r3_worker_{g}", r)
    if want("sink"):
        from sinks import bench as sink_bench

        common.write("sink", sink_bench.run(n=n, subscribers=subs))
    return 0


def _fresh_broker_phase(bench_dir, name: str, fn) -> dict:
    """Run ``fn`` against a broker of its own, so its inputs hold only its workload."""
    from telbus.localbroker import LocalBroker

    import topics
    from telbus import kafka

    broker = LocalBroker(bench_dir / f"kafka-{name}")
    broker.start()
    os.environ["TELBUS_KAFKA_BOOTSTRAP"] = broker.bootstrap
    try:
        topics.inspect(kafka.admin(), create=True)
        kafka.publish_schemas()
        return fn()
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
