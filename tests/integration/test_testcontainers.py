"""The testcontainers path: a Kafka in Docker instead of the local broker, where Docker exists.

On machines without a Docker engine (this project's CI among them) it skips with the
reason; the rest of the suite runs on the local KRaft broker either way.
"""
import pytest

from tests.conftest import docker_available

pytestmark = pytest.mark.integration


def test_round_trip_through_a_testcontainers_kafka():
    if not docker_available():
        pytest.skip("no Docker engine reachable: testcontainers' Kafka cannot run here")
    from confluent_kafka import Consumer, Producer
    from testcontainers.kafka import KafkaContainer

    from telbus import codec, jsonform
    from tests.samples import SAMPLES

    event = jsonform.event_from_json(SAMPLES["net.cdr.raw"][0])
    with KafkaContainer() as kc:
        bootstrap = kc.get_bootstrap_server()
        p = Producer({"bootstrap.servers": bootstrap})
        p.produce("net.cdr.raw", codec.encode(event), event["subscriber_id"])
        assert p.flush(60) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tc", "auto.offset.reset": "earliest"})
        c.subscribe(["net.cdr.raw"])
        msg = None
        for _ in range(60):
            msg = c.poll(1.0)
            if msg is not None and not msg.error():
                break
        c.close()
        assert msg is not None and codec.decode(msg.value()) == event
