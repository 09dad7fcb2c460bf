"""The Faust app of ``telbus worker``.

Every processor is a confluent-kafka transactional loop hosted on a thread of this app
(``processors/hosting.py``): Faust keeps the worker process, its lifecycle, signals and
crash handling, and its web server serves the subscription views. No Faust agent or table
is used: their at-least-once commits and buffered changelog writes could not give the
exactly-once results the processors promise (the module docstrings of
``processors.rating.agent`` and ``processors.subscriptions.agent`` say what failed).
"""
from __future__ import annotations

import faust

from telbus import config


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
        store="memory://",      # no Faust tables: each loop keeps its state in its changelog
        datadir=str(datadir),
        web_host=config.http_host(),
        web_bind=config.http_host(),
        web_port=web_port(),
        autodiscover=False,
        producer_acks=-1,
    )


app = create_app()


def authorized(request) -> bool:
    """Bearer-token check for the worker's HTTP views (a no-op on loopback without a token)."""
    return config.bearer_ok(request.headers.get("Authorization"), config.http_token())
