"""A worker whose processor dies stops as a whole, with a non-zero status and the reason.

The failure here is a real misconfiguration, not an injected fault: a rating state topic
name the broker refuses to create.
"""
from __future__ import annotations

import subprocess

import pytest

from processors import failfast
from telbus.localbroker import free_port
from tests.helpers import Proc, unique, wait_until

pytestmark = pytest.mark.integration


def test_worker_exits_non_zero_when_its_rating_loop_dies(broker, tmp_path):
    u = unique("ff")
    p = Proc(f"worker-{u}", ["worker", "--loglevel", "warning"], log_dir=tmp_path, env={
        "TELBUS_WORKER_APP_ID": f"telbus-it-{u}",
        "TELBUS_WORKER_ID": u,
        "TELBUS_WORKER_WEB_PORT": str(free_port()),
        "TELBUS_WORKER_AGENTS": "rating",
        "TELBUS_RATING_GROUP": f"telbus-rating-{u}",
        "TELBUS_RATING_STATE_TOPIC": "not a valid topic name!",
    })
    p.log_path.parent.mkdir(parents=True, exist_ok=True)
    from tests.helpers import ROOT, TELBUS

    p.proc = subprocess.Popen([TELBUS, *p.argv], stdout=open(p.log_path, "ab"), stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=p.env, cwd=str(ROOT), start_new_session=True)
    try:
        rc = wait_until(lambda: p.proc.poll() is not None and [p.proc.returncode], 120, 0.5, "the worker to exit")
        log = p.log_tail(200)
        assert rc == [failfast.EXIT_PROCESSOR_FAILED], log
        assert "rating failed" in log and "stopping the worker" in log, log
    finally:
        p.stop()
