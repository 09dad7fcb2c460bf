"""What counts as a crashed Faust service, and which client errors are refusals."""
from __future__ import annotations

from confluent_kafka import KafkaError

from processors.failfast import crashed_services
from telbus.kafka import refusal


class Svc:
    def __init__(self, name, crashed=False, children=()):
        self.shortlabel = name
        self.crashed = crashed
        self.crash_reason = RuntimeError(f"{name} broke") if crashed else None
        self._children = list(children)


def test_a_crash_deep_in_the_tree_is_found():
    leaf = Svc("Recovery", crashed=True)
    root = Svc("App", children=[Svc("Consumer", children=[Svc("Fetcher")]), Svc("Tables", children=[leaf])])
    found = crashed_services(root)
    assert len(found) == 1 and found[0].startswith("Recovery:") and "Recovery broke" in found[0]


def test_a_healthy_tree_reports_nothing_even_with_cycles():
    a = Svc("A")
    b = Svc("B", children=[a])
    a._children.append(b)
    assert crashed_services(a) == []


def test_authentication_and_tls_failures_are_refusals():
    assert refusal(KafkaError(KafkaError._AUTHENTICATION, "invalid credentials"))
    assert refusal(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED, "bad"))
    assert refusal(KafkaError(KafkaError._SSL, "certificate verify failed"))


def test_transient_errors_are_not_refusals():
    for code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                 KafkaError.NOT_LEADER_FOR_PARTITION):
        assert refusal(KafkaError(code, "x")) is None


def test_what_a_transactional_loop_restarts_in_place_for():
    from confluent_kafka import KafkaException

    from processors.hosting import restartable

    assert restartable(KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True)))
    assert restartable(KafkaException(KafkaError(KafkaError._TIMED_OUT, "send offsets timed out", retriable=True)))
    assert restartable(KafkaException(KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "epoch")))
    assert not restartable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "acl")))
    assert not restartable(RuntimeError("topic net.cdr.raw does not exist"))


def test_in_place_restarts_are_limited_per_window():
    from processors.hosting import Restarts

    now = [0.0]
    r = Restarts(limit=3, window_s=300, clock=lambda: now[0])
    assert [r.allow() for _ in range(4)] == [True, True, True, False]
    now[0] = 301.0
    assert r.allow()
