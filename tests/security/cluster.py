"""A SASL_SSL + SCRAM-SHA-512 + ACL broker on loopback, configured by the tests themselves.

* TLS: a throwaway CA (:mod:`telbus.tls`) signs the broker's certificate (SAN 127.0.0.1 and
  localhost); the broker reads PEM files directly. Clients trust the CA file
  (``TELBUS_KAFKA_SSL_CA_LOCATION``) and verify the host name.
* Client listener ``BROKER``: SASL_SSL, SCRAM-SHA-512 only. SCRAM credentials of every
  principal are written when the storage is formatted, so they exist from the first start.
  Inter-broker traffic authenticates as ``admin``.
* Controller listener: TLS with client certificates (mutual TLS): the broker's own
  certificate is its identity there, ``User:CN=telbus-broker,O=telbus test``. Nothing on
  this node accepts an unauthenticated connection.
* Authorization: KRaft's ``StandardAuthorizer``; ``admin`` and the broker certificate are
  super users; with no ACL nothing is allowed (``allow.everyone.if.no.acl.found=false``).

Principals and what they may do (:data:`ACL_PLAN`):

* ``producer``: write (and describe) the contract's input topics, nothing else;
* ``worker``: read the inputs and ``bss.cdr.rated`` (the fraud rules read rated CDRs),
  write the outputs and every DLQ, and own everything named ``telbus-*`` (Faust changelogs,
  repartition topics, the rating state topic; groups; transactional ids);
* ``sink``: read every input and output topic, write the DLQs, its own groups;
* ``reader``: read every topic (what ``telbus consume`` needs), no writes.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import topics
from telbus.localbroker import LocalBroker
from telbus.tls import TestCA, broker_ssl_properties

MECHANISM = "SCRAM-SHA-512"
BROKER_CN = "telbus-broker"
USERS = ("admin", "producer", "worker", "sink", "reader")

INPUTS = tuple(t.name for t in topics.contract_topics("input"))
OUTPUTS = tuple(t.name for t in topics.contract_topics("output"))
DLQS = tuple(t.dlq for t in topics.contract_topics())


def _acl_plan():
    """(principal, resource type, pattern type, name, operations) rows (BROKER: the cluster resource)."""
    rows = []
    for t in INPUTS:
        rows.append(("producer", "TOPIC", "LITERAL", t, ("WRITE", "DESCRIBE")))
        rows.append(("worker", "TOPIC", "LITERAL", t, ("READ", "DESCRIBE")))
    rows.append(("worker", "TOPIC", "LITERAL", "bss.cdr.rated", ("READ",)))
    for t in OUTPUTS + DLQS:
        rows.append(("worker", "TOPIC", "LITERAL", t, ("WRITE", "DESCRIBE")))
    rows += [("worker", "TOPIC", "PREFIXED", "telbus-", ("ALL",)),
             ("worker", "GROUP", "PREFIXED", "telbus", ("ALL",)),
             ("worker", "TRANSACTIONAL_ID", "PREFIXED", "telbus", ("ALL",)),
             ("worker", "BROKER", "LITERAL", "kafka-cluster", ("IDEMPOTENT_WRITE", "DESCRIBE_CONFIGS"))]
    for t in INPUTS + OUTPUTS:
        rows.append(("sink", "TOPIC", "LITERAL", t, ("READ", "DESCRIBE")))
    for t in DLQS:
        rows.append(("sink", "TOPIC", "LITERAL", t, ("WRITE", "DESCRIBE")))
    rows += [("sink", "GROUP", "PREFIXED", "telbus-sink", ("ALL",)),
             ("sink", "GROUP", "LITERAL", "telbus-anon", ("READ", "DESCRIBE"))]
    rows += [("reader", "TOPIC", "LITERAL", "*", ("READ", "DESCRIBE")),
             ("reader", "GROUP", "LITERAL", "telbus-anon", ("READ", "DESCRIBE"))]
    return rows


ACL_PLAN = _acl_plan()


@dataclass
class SecureCluster:
    directory: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.directory = Path(self.directory)
        # recognisable, unique per run: the leak tests grep every output for them
        self.passwords = self.passwords or {u: f"pw-{u}-{secrets.token_hex(12)}" for u in USERS}
        self.ca = TestCA(self.directory / "tls")
        self.server_cert = self.ca.issue(BROKER_CN)
        admin_pw = self.passwords["admin"]
        props = {
            **broker_ssl_properties(self.ca, self.server_cert),
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.broker.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="admin" password="{admin_pw}";',
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:admin;User:CN={BROKER_CN},O=telbus test",
            "allow.everyone.if.no.acl.found": "false",
            # Faust creates its internal topics itself; nothing else may appear by accident
            "auto.create.topics.enable": "false",
        }
        self.broker = LocalBroker(self.directory / "kafka", extra_properties=props, listener_protocol="SASL_SSL",
                                  controller_protocol="SSL", scram_users=self.passwords,
                                  scram_mechanism=MECHANISM)
        self.broker.client_config = self.client("admin")   # readiness: the admin can list topics

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def client(self, user: str, password: str | None = None) -> dict:
        """librdkafka settings for ``user`` (``password`` overrides the real one)."""
        return {"bootstrap.servers": self.broker.bootstrap, "security.protocol": "SASL_SSL",
                "sasl.mechanism": MECHANISM, "sasl.username": user,
                "sasl.password": self.passwords[user] if password is None else password,
                "ssl.ca.location": str(self.ca.ca_file)}

    def env(self, user: str, password: str | None = None) -> dict:
        """The TELBUS_* environment a telbus process of ``user`` runs with."""
        return {"TELBUS_KAFKA_BOOTSTRAP": self.broker.bootstrap,
                "TELBUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "TELBUS_KAFKA_SASL_MECHANISM": MECHANISM,
                "TELBUS_KAFKA_SASL_USERNAME": user,
                "TELBUS_KAFKA_SASL_PASSWORD": self.passwords[user] if password is None else password,
                "TELBUS_KAFKA_SSL_CA_LOCATION": str(self.ca.ca_file)}

    def start(self) -> "SecureCluster":
        self.broker.start(timeout=120)
        return self

    def stop(self) -> None:
        self.broker.stop()

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.client("admin"))

    def apply_acls(self, plan=ACL_PLAN) -> int:
        from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                           ResourceType)

        bindings = [AclBinding(ResourceType[rtype], name, ResourcePatternType[ptype], f"User:{user}", "*",
                               AclOperation[op], AclPermissionType.ALLOW)
                    for user, rtype, ptype, name, ops in plan for op in ops]
        admin = self.admin()   # keep the handle alive until every future is resolved
        for fut in admin.create_acls(bindings, request_timeout=30).values():
            fut.result()
        return len(bindings)


def read_all(cluster: SecureCluster, topic: str, user: str = "admin", timeout: float = 20.0):
    """Every record of ``topic`` (read_committed) as (partition, offset, key, value bytes, headers)."""
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({**cluster.client(user), "group.id": "telbus-anon", "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        want = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in want])
        out, done = [], set()
        deadline = time.monotonic() + timeout
        while done != want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
                continue
            out.append((m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or [])))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        return out
    finally:
        c.close()


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc (Linux)."""
    import ipaddress
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, v6 in ((f"/proc/{pid}/net/tcp", False), (f"/proc/{pid}/net/tcp6", True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:      # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if v6:   # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
            else:
                raw = raw[::-1]
            out.add((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return out


def produce_summary(stderr: str) -> dict:
    """The JSON summary ``telbus produce`` prints last (librdkafka may log around it)."""
    import json

    for line in reversed(stderr.splitlines()):
        if line.startswith("{") and '"published"' in line:
            return json.loads(line)
    raise AssertionError(f"no summary line in:\n{stderr[-2000:]}")
