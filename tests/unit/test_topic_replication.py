"""A real cluster gets replication factor 3 and min.insync.replicas 2 from the environment,
on every catalog topic and its dead-letter topic, without editing the catalog."""
from __future__ import annotations

import pytest

import topics


@pytest.fixture
def fresh_catalog():
    topics.catalog.cache_clear()
    yield
    topics.catalog.cache_clear()


def test_single_broker_defaults(fresh_catalog, monkeypatch):
    monkeypatch.delenv("TELBUS_TOPIC_REPLICATION", raising=False)
    monkeypatch.delenv("TELBUS_TOPIC_MIN_ISR", raising=False)
    for t in topics.catalog().values():
        assert t.replication_factor == 1
        assert t.config["min.insync.replicas"] == "1"


def test_cluster_settings_reach_every_topic_and_dlq(fresh_catalog, monkeypatch):
    monkeypatch.setenv("TELBUS_TOPIC_REPLICATION", "3")
    monkeypatch.setenv("TELBUS_TOPIC_MIN_ISR", "2")
    cat = topics.catalog()
    assert any(t.kind == "dlq" for t in cat.values())
    for t in cat.values():
        assert t.replication_factor == 3, t.name
        assert t.config["min.insync.replicas"] == "2", t.name


def test_partition_counts_keep_co_partitioning(fresh_catalog):
    """Topics keyed by subscriber_id must have one partition count, or one worker would
    not own all of a subscriber's events."""
    counts = {t.partitions for t in topics.contract_topics() if t.key == "subscriber_id"}
    assert counts == {12}
