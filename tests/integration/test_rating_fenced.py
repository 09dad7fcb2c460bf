"""A fenced rating producer is replaced inside the running worker, and nothing is rated twice.

A broker away longer than the transaction timeout aborts the loop's open transaction and
fences its producer (seen in the fault suite). Here the fencing is done the way Kafka does
it for a zombie: another producer initialises transactions with the same transactional.id.
"""
from __future__ import annotations

from collections import Counter

import pytest

from telbus import config, kafka
from telbus.localbroker import free_port
from tests.helpers import Proc, produce, unique, wait_until
from tests.integration.test_rating_golden import cdr, created, ms, rated_for, sub_event, tariff

pytestmark = pytest.mark.integration

T0 = ms("2026-11-20T08:00:00+08:00")


def test_fenced_loop_restarts_in_place_and_rates_each_cdr_once(broker, tmp_path):
    u = unique("fz")
    proc = Proc(f"worker-{u}", ["worker", "--loglevel", "warning"], log_dir=tmp_path,
                env={"TELBUS_WORKER_APP_ID": f"telbus-it-{u}", "TELBUS_WORKER_ID": u,
                     "TELBUS_WORKER_WEB_PORT": str(free_port()), "TELBUS_WORKER_AGENTS": "rating"})
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    proc.start(ready_timeout=180)
    try:
        plan, sub = f"P{u}", f"S{u}"
        produce("bss.tariff.plans", [tariff(plan, 1, T0 - 86_400_000, dom=100, intl=1000, inc=6, free_min=0,
                                            sms_dom=100, sms_intl=1000, free_sms=0, li_per_mb=1000, free_mb=0,
                                            credit_limit_li=0)])
        produce("bss.subscriber.events", [created(sub, plan, T0 - 3_600_000),
                                          sub_event("BalanceRecharged", sub, T0 - 1_800_000, f"r-{u}",
                                                    amount_li=10**7, channel="APP")])
        first = [cdr(f"{u}-a{i}", sub, "VOICE", T0 + i * 1000, duration=60) for i in range(5)]
        produce("net.cdr.raw", first)
        wait_until(lambda: len(rated_for([sub])) >= 5, 120, 0.5, "the first CDRs rated")

        # the zombie-fencing move: same transactional.id, a new epoch
        from confluent_kafka import Producer

        fencer = Producer(kafka.client_config(**{"transactional.id": f"telbus-rating-{u}"}))
        fencer.init_transactions(60)

        second = [cdr(f"{u}-b{i}", sub, "VOICE", T0 + 60_000 + i * 1000, duration=60) for i in range(5)]
        produce("net.cdr.raw", second)
        def all_rated():
            assert proc.proc.poll() is None, f"worker exited {proc.proc.returncode}:\n{proc.log_tail()}"
            r = rated_for([sub])
            return r if len(r) >= 10 else None

        rated = wait_until(all_rated, 180, 0.5, "the CDRs after the fencing rated")
        counts = Counter(r["cdr_id"] for r in rated)
        assert set(counts) == {c["cdr_id"] for c in first + second}
        assert max(counts.values()) == 1, counts
        assert proc.proc.poll() is None, proc.log_tail()
        log = proc.log_path.read_text(errors="replace")
        assert "starting the loop again in this worker" in log, log[-3000:]
        # the balance carried on from the rebuilt state: ten minutes at 100 li each
        assert min(r["balance_after_li"] for r in rated) == 10**7 - 10 * 100
    finally:
        proc.stop()
