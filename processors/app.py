"""The one Faust app every processor registers its agents and tables on.

Inputs are consumed as raw bytes and decoded by the shared codec inside the agent, so a
record that cannot be decoded reaches its DLQ with the original bytes instead of killing
the stream. Outputs are sent with the ``telbus`` Faust codec, which *is* the shared
codec: processors and producers cannot disagree on the wire format.
"""
from __future__ import annotations

import faust
from faust.serializers import codecs

from telbus import config
from telbus import codec as telbus_codec


class TelbusAvroCodec(codecs.Codec):
    """Faust codec over :mod:`telbus.codec` (single-object or Confluent framing)."""

    def _dumps(self, obj) -> bytes:
        return telbus_codec.encode(obj)

    def _loads(self, s: bytes):
        return telbus_codec.decode(s)


codecs.register("telbus", TelbusAvroCodec())

#: Partition count of the co-partitioned subscriber topics; Faust's internal topics
#: (changelogs, repartitions) use it too so tables stay co-partitioned with their sources.
PARTITIONS = 12


def processing_guarantee() -> str:
    """Guarantee of the Faust agents (fraud, subscriptions); default at-least-once.

    faust-streaming 0.15.3's exactly_once does not hold here: sends to topics the app does
    not consume (every contract output) skip the transaction, table changelog writes can
    miss the transaction of the offsets they belong to, and recovery fails when a second
    worker joins. The money path (rating) and alarm correlation therefore run their own
    Kafka transactions; the Faust agents are at-least-once with idempotent outputs
    (deterministic alert ids, versioned subscription states) that consumers can dedupe.
    """
    value = config.env("TELBUS_PROCESSING_GUARANTEE", "at_least_once")
    if value not in ("exactly_once", "at_least_once"):
        raise ValueError(f"TELBUS_PROCESSING_GUARANTEE must be exactly_once or at_least_once, not {value!r}")
    return value


def worker_id() -> str:
    return config.env("TELBUS_WORKER_ID", "1")


def broker_credentials():
    """Faust/aiokafka credentials from the same TELBUS_KAFKA_* settings librdkafka uses.

    ``security.protocol`` SSL / SASL_PLAINTEXT / SASL_SSL; ``sasl.mechanism`` (or
    librdkafka's alias ``sasl.mechanisms``), ``sasl.username``, ``sasl.password``;
    ``ssl.ca.location`` (a CA file or a directory of CA files; default: the system CAs);
    a client certificate for mutual TLS with ``ssl.certificate.location``,
    ``ssl.key.location`` and ``ssl.key.password``; ``ssl.endpoint.identification.algorithm
    =none`` turns host name verification off (the certificate chain is still verified).
    """
    pt = config.kafka_passthrough()
    protocol = pt.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    import os
    import ssl

    ctx = None
    if "SSL" in protocol:
        ca = pt.get("ssl.ca.location")
        if ca and os.path.isdir(ca):
            ctx = ssl.create_default_context(capath=ca)
        else:
            ctx = ssl.create_default_context(cafile=ca)
        if pt.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
            ctx.check_hostname = False
        cert = pt.get("ssl.certificate.location")
        if cert:
            ctx.load_cert_chain(cert, keyfile=pt.get("ssl.key.location"), password=pt.get("ssl.key.password"))
    if "SASL" in protocol:
        mechanism = pt.get("sasl.mechanism") or pt.get("sasl.mechanisms") or "PLAIN"
        return faust.SASLCredentials(
            username=pt.get("sasl.username"), password=pt.get("sasl.password"),
            mechanism=mechanism.upper(), ssl_context=ctx)
    return faust.SSLCredentials(ctx)


def web_port() -> int:
    """The views' HTTP port: TELBUS_WORKER_WEB_PORT (default 6066); 0 picks a free one
    (tests, several workers on one machine)."""
    port = int(config.env("TELBUS_WORKER_WEB_PORT", "6066"))
    if port == 0:
        from telbus.localbroker import free_port

        port = free_port()
    return port


def create_app() -> faust.App:
    servers = [f"kafka://{hp.strip()}" for hp in config.bootstrap().split(",") if hp.strip()]
    datadir = config.data_dir() / "worker" / worker_id()
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        config.env("TELBUS_WORKER_APP_ID", "telbus"),
        broker=servers,
        broker_credentials=broker_credentials(),
        store=config.env("TELBUS_WORKER_STORE", "rocksdb://"),
        datadir=str(datadir),
        processing_guarantee=processing_guarantee(),
        topic_partitions=PARTITIONS,
        topic_replication_factor=int(config.env("TELBUS_TOPIC_REPLICATION", "1")),
        key_serializer="raw",
        value_serializer="raw",
        web_host=config.http_host(),
        web_bind=config.http_host(),
        web_port=web_port(),
        autodiscover=False,
        producer_acks=-1,
        producer_max_request_size=4 * 1024 * 1024,   # the broker and topic decide what is too large
        # Commit (and so flush what agents sent, e.g. the views feed) twice a second: a
        # change is visible on every worker within a second, not Faust's default ~3 s.
        broker_commit_interval=0.5,
        # How long a dead worker's partitions wait before the survivors take them over (and a
        # restarted worker before it gets its own back: aiokafka has no static membership).
        # Faust's default is 60 s; heartbeats every 3 s make 20 s safe from false alarms.
        broker_session_timeout=float(config.env("TELBUS_WORKER_SESSION_TIMEOUT_S", "20")),
        broker_heartbeat_interval=3.0,
        # Where a *new* group starts: the whole log by default (state is rebuilt from it);
        # "latest" for a worker that must only see what comes after it joined.
        consumer_auto_offset_reset=config.env("TELBUS_WORKER_OFFSET_RESET", "earliest"),
    )


app = create_app()


def authorized(request) -> bool:
    """Bearer-token check for the worker's HTTP views (a no-op on loopback without a token)."""
    return config.bearer_ok(request.headers.get("Authorization"), config.http_token())


def input_topic(name: str, **kwargs) -> faust.TopicT:
    """A contract topic as a raw-bytes Faust topic (decoding happens in the agent)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", internal=False, **kwargs)


def output_topic(name: str) -> faust.TopicT:
    """A contract output topic: string keys, values in the shared Avro codec."""
    return app.topic(name, key_serializer="raw", value_serializer="telbus", internal=False)
