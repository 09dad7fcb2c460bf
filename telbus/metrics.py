"""Prometheus metrics shared by every telbus process.

Names follow Prometheus conventions: ``telbus_`` prefix, base units, ``_total`` counters.
Labels are bounded sets (topic, processor, outcome, reason class, rule): never a
subscriber, account or record id.
"""
from __future__ import annotations

import json
import os

from prometheus_client import Counter, Gauge, Histogram

from telbus import config

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)

EVENTS_CONSUMED = Counter("telbus_events_consumed_total", "Records read from Kafka", ["process", "topic"])
EVENTS_PRODUCED = Counter("telbus_events_produced_total", "Records written to Kafka", ["process", "topic"])
OUTCOMES = Counter("telbus_processor_outcomes_total", "Processing outcomes", ["processor", "outcome"])
DLQ_RECORDS = Counter("telbus_dlq_records_total", "Records sent to a dead-letter topic", ["topic", "reason"])
PROCESSING_SECONDS = Histogram("telbus_processing_seconds", "In-process handling time per record",
                               ["processor"], buckets=LATENCY_BUCKETS)
EVENT_LATENCY_SECONDS = Histogram("telbus_event_latency_seconds",
                                  "Kafka timestamp of the input to the output being produced",
                                  ["processor"], buckets=LATENCY_BUCKETS)
CONSUMER_LAG = Gauge("telbus_consumer_lag_records", "Records behind the end of the partition",
                     ["group", "topic", "partition"])
STATE_ENTRIES = Gauge("telbus_state_entries", "Entries in a processor's state table", ["table"])
REBALANCES = Counter("telbus_rebalances_total", "Consumer group rebalances", ["process"])
LATE_EVENTS = Counter("telbus_late_events_total", "Events beyond the allowed lateness", ["processor"])
UP_INFO = Gauge("telbus_process_up", "1 while the process runs", ["process"])

#: Reason classes for DLQ metrics: the label keeps a small fixed set, the full reason
#: travels in the record's ``telbus.error`` header.
REASON_CLASSES = ("decode", "schema", "invalid", "unknown_reference", "oversized", "mapping", "other")


def reason_class(reason: str) -> str:
    r = reason.lower()
    if "fingerprint" in r or "framing" in r or "corrupt" in r or "empty value" in r or "truncated" in r \
            or "trailing" in r:
        return "decode"
    if "unexpected event_type" in r or "schema" in r:
        return "schema"
    if "unknown" in r:
        return "unknown_reference"
    if "too large" in r or "oversized" in r:
        return "oversized"
    if "map" in r:
        return "mapping"
    if "invalid" in r or "negative" in r or "must" in r or "rejected" in r:
        return "invalid"
    return "other"


def serve(process: str, port: int | None = None) -> str:
    """Start the metrics endpoint; return its URL and record it for ``telbus status``.

    Off loopback it requires ``TELBUS_HTTP_TOKEN`` as a bearer token (Prometheus:
    ``authorization: {credentials: ...}`` in the scrape config).
    """
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    host = config.http_host()
    token = config.http_token()
    port = port if port is not None else int(config.env(f"TELBUS_{process.upper()}_METRICS_PORT", "0"))
    metrics_app = make_wsgi_app()

    def guarded(environ, start_response):
        if not config.bearer_ok(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"missing or wrong bearer token\n"]
        return metrics_app(environ, start_response)

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # scrapes are not news
            pass

    server = make_server(host, port, guarded, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    actual = server.server_address[1]
    UP_INFO.labels(process).set(1)
    url = f"http://{host}:{actual}/metrics"
    register_endpoint(process, "metrics", url)
    return url


def register_endpoint(process: str, kind: str, url: str) -> None:
    """Write this process's endpoint into ``run/<process>.json`` (read by ``telbus status``)."""
    path = config.run_dir() / f"{process}.json"
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("pid") != os.getpid():
                data = {}
        except ValueError:
            data = {}
    data["pid"] = os.getpid()
    data.setdefault("endpoints", {})[kind] = url
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)

# -- added for operations (ops/prometheus alert rules, ops/grafana dashboards) ----------
# (the sink's own metrics, telbus_sink_*, are defined in sinks/sink.py)
TOPIC_END_OFFSET = Gauge("telbus_topic_end_offset", "High watermark of a partition, as seen by the lag collector",
                         ["topic", "partition"])
LAG_COLLECTIONS = Counter("telbus_lag_collections_total", "Consumer-lag collection rounds", ["group", "outcome"])
