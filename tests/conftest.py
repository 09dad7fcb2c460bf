"""Test fixtures: a real Kafka broker for the session, isolated data directories.

Broker, in order of preference:
1. ``TELBUS_KAFKA_BOOTSTRAP`` set: that cluster (tests use unique ids, so they can share it);
2. ``TELBUS_TEST_TESTCONTAINERS=1`` and a reachable Docker engine: testcontainers' Kafka;
3. otherwise a local KRaft node (jars from Maven Central) on free ports, in a temp dir,
   stopped at the end of the session.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="telbus-test-"))
# Every process the tests start (CLI, worker, sink) gets its own data directory, never the
# developer's .data, and finds the test broker through the environment.
os.environ["TELBUS_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("TELBUS_WORKER_WEB_PORT", "0")


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap():
    if os.environ.get("TELBUS_KAFKA_BOOTSTRAP") and not os.environ.get("TELBUS_TEST_OWN_BROKER"):
        yield os.environ["TELBUS_KAFKA_BOOTSTRAP"]
        return
    if os.environ.get("TELBUS_TEST_TESTCONTAINERS") == "1" and docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kc:
            os.environ["TELBUS_KAFKA_BOOTSTRAP"] = kc.get_bootstrap_server()
            yield kc.get_bootstrap_server()
        return
    from telbus.localbroker import LocalBroker

    broker = LocalBroker(_SESSION_DIR / "kafka")
    broker.start()
    os.environ["TELBUS_KAFKA_BOOTSTRAP"] = broker.bootstrap
    os.environ["TELBUS_TEST_OWN_BROKER"] = "1"
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker(kafka_bootstrap):
    """The test cluster with the topic catalog applied and schemas published."""
    import topics
    from telbus import kafka

    kafka.wait_for_cluster(60)
    reports = topics.inspect(kafka.admin(), create=True)
    assert not [r for r in reports if any("failed" in d for d in r.details)], reports
    kafka.publish_schemas()
    return kafka_bootstrap


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private TELBUS_DATA_DIR for one test (worker state, store, pidfiles)."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("TELBUS_DATA_DIR", str(d))
    return d
