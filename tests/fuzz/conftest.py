"""Fuzz tests: random and mutated input at the codec, at ``telbus produce`` and at every input
topic through a running worker and sink.

Budget: ``TELBUS_FUZZ_EXAMPLES`` examples per property (default 200, so ``make test`` stays
quick); e.g. ``TELBUS_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz`` for a long run.
``TELBUS_FUZZ_SEED`` fixes hypothesis's seed to replay a run.

The stream tests run against a broker of their own (plaintext, loopback, free ports) so
that the dead-letter topics hold exactly what these tests sent and every record can be
counted; the session broker and its topics are never touched.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TELBUS_FUZZ_EXAMPLES") or 200)

settings.register_profile(
    "telbus-fuzz", max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture])


def fuzz_settings(**overrides):
    """Settings (and the seed, if ``TELBUS_FUZZ_SEED`` is set) for one property."""
    from hypothesis import seed

    base = settings(settings.get_profile("telbus-fuzz"), **overrides)
    fixed = os.environ.get("TELBUS_FUZZ_SEED")

    def apply(fn):
        fn = base(fn)
        return seed(int(fixed))(fn) if fixed else fn

    return apply


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory):
    """A private single-node broker for one module; TELBUS_KAFKA_BOOTSTRAP and TELBUS_DATA_DIR
    point at it and at a private data directory while the module runs."""
    from telbus import kafka
    from telbus.localbroker import LocalBroker
    import topics

    base = tmp_path_factory.mktemp("fuzz")
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith("TELBUS_KAFKA_"):
            mp.delenv(k)
    broker = LocalBroker(base / "kafka")
    try:
        broker.start(timeout=120)
        mp.setenv("TELBUS_KAFKA_BOOTSTRAP", broker.bootstrap)
        (base / "data").mkdir()
        mp.setenv("TELBUS_DATA_DIR", str(base / "data"))
        kafka.wait_for_cluster(60)
        reports = topics.inspect(kafka.admin(), create=True)
        assert not [r for r in reports if any("failed" in d for d in r.details)], reports
        kafka.publish_schemas()
        yield broker
    finally:
        broker.stop()
        mp.undo()
