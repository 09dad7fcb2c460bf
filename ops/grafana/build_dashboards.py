"""Writes ops/grafana/dashboards/*.json (Grafana dashboard models) from the panel lists below.

Edit the panels here and run ``.venv/bin/python ops/grafana/build_dashboards.py``; the JSON
files are committed so Grafana's provisioning can load them as they are. Every expression
uses only metrics defined in telbus/metrics.py, the sink's telbus_sink_* (sinks/sink.py) and
Prometheus' own ``up``;
tests/integration/test_dashboards.py runs each one against a real Prometheus.
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("dashboards")
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"


def ts(title, exprs, unit="short", legend=None, kind="timeseries", desc=""):
    """A panel: exprs is a list of (expr, legend) or plain exprs."""
    targets = []
    for i, e in enumerate(exprs):
        expr, leg = e if isinstance(e, tuple) else (e, legend or "")
        targets.append({"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": leg or "__auto",
                        "range": True})
    return {"type": kind, "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}


def rate(metric, sel="", by="", window=RI):
    s = f"{metric}{{{sel}}}" if sel else metric
    inner = f"rate({s}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def p(q, processor):
    return (f"histogram_quantile({q}, sum by (le) (rate(telbus_processing_seconds_bucket"
            f"{{processor=\"{processor}\"}}[{RI}])))")


def lat(q, processor):
    return (f"histogram_quantile({q}, sum by (le) (rate(telbus_event_latency_seconds_bucket"
            f"{{processor=\"{processor}\"}}[{RI}])))")


DASHBOARDS = {
    "overview": ("telbus — overview", [
        ts("Processes up", [('up{job="telbus"}', "{{telbus_process}} {{instance}}")], kind="stat",
           desc="1 = scraped. 0 for a minute fires TelbusProcessDown."),
        ts("Records consumed / s by topic", [(rate("telbus_events_consumed_total", by="topic"), "{{topic}}")],
           unit="ops"),
        ts("Records produced / s by topic", [(rate("telbus_events_produced_total", by="topic"), "{{topic}}")],
           unit="ops"),
        ts("Dead letters / s", [(rate("telbus_dlq_records_total", by="topic, reason"), "{{topic}} {{reason}}")],
           unit="ops", desc="Anything above 0 fires TelbusDeadLetters: read the .dlq topic."),
        ts("Consumer lag (records) by group and topic",
           [("sum by (group, topic) (telbus_consumer_lag_records)", "{{group}} {{topic}}")]),
        ts("Processing time p99 by processor",
           [(f"histogram_quantile(0.99, sum by (le, processor) (rate(telbus_processing_seconds_bucket[{RI}])))",
             "{{processor}}")], unit="s"),
        ts("Processor outcomes / s", [(rate("telbus_processor_outcomes_total", by="processor, outcome"),
                                       "{{processor}} {{outcome}}")], unit="ops"),
        ts("State table entries", [("sum by (table) (telbus_state_entries)", "{{table}}")]),
    ]),
    "rating": ("telbus — rating and online charging", [
        ts("CDRs in vs rated out / s", [
            (rate("telbus_events_consumed_total", 'topic="net.cdr.raw"'), "CDRs consumed"),
            (rate("telbus_events_produced_total", 'topic="bss.cdr.rated"'), "rated CDRs produced")],
           unit="ops", desc="Consumed without produced for 5 minutes fires TelbusNoRatedCdrs."),
        ts("Rating outcomes / s", [(rate("telbus_processor_outcomes_total", 'processor="rating"', "outcome"),
                                    "{{outcome}}")], unit="ops"),
        ts("Outputs / s (rated CDRs, credit control)", [
            (rate("telbus_events_produced_total", 'topic=~"bss.cdr.rated|ocs.credit.control"', "topic"),
             "{{topic}}")], unit="ops"),
        ts("Processing time per CDR", [(p(0.5, "rating"), "p50"), (p(0.99, "rating"), "p99")], unit="s"),
        ts("CDR lag (records) by partition",
           [('sum by (partition) (telbus_consumer_lag_records{topic="net.cdr.raw"})', "p{{partition}}")]),
        ts("Subscribers in rating state", [('sum(telbus_state_entries{table="rating_subscribers"})', "subscribers")]),
        ts("Rating dead letters / s",
           [(rate("telbus_dlq_records_total", 'topic=~"net.cdr.raw|bss.tariff.plans|bss.subscriber.events"',
                  "topic, reason"), "{{topic}} {{reason}}")], unit="ops"),
    ]),
    "fraud": ("telbus — fraud detection", [
        ts("Inputs / s", [(rate("telbus_events_consumed_total", 'topic=~"sec.login.events|net.cdr.raw|bss.cdr.rated"',
                                "topic"), "{{topic}}")], unit="ops"),
        ts("Fraud alerts / s", [(rate("telbus_events_produced_total", 'topic="sec.fraud.alerts"'), "alerts")],
           unit="ops"),
        ts("Fraud outcomes / s (rules, folds, expiries)",
           [(rate("telbus_processor_outcomes_total", 'processor="fraud"', "outcome"), "{{outcome}}")], unit="ops"),
        ts("Processing time", [(p(0.5, "fraud"), "p50"), (p(0.99, "fraud"), "p99")], unit="s"),
        ts("Late events / s", [(f'sum(rate(telbus_late_events_total{{processor="fraud"}}[{RI}])) or vector(0)',
                                "late")], unit="ops",
           desc="Events beyond the allowed lateness (counted, folded into no window)."),
        ts("Fraud state entries", [('sum by (table) (telbus_state_entries{table=~"fraud[-_].*"})', "{{table}}")]),
        ts("Login lag (records)", [('sum(telbus_consumer_lag_records{topic="sec.login.events"})', "lag")]),
    ]),
    "alarms": ("telbus — alarm correlation", [
        ts("Alarms and topology in / s", [
            (rate("telbus_events_consumed_total", 'topic=~"oss.alarm.raw|oss.topology"', "topic"), "{{topic}}")],
           unit="ops"),
        ts("Incident events / s", [(rate("telbus_events_produced_total", 'topic="oss.incidents"'), "incidents")],
           unit="ops"),
        ts("Alarm dispositions and incident changes / s",
           [(rate("telbus_processor_outcomes_total", 'processor="alarms"', "outcome"), "{{outcome}}")], unit="ops"),
        ts("Alarm to incident latency", [(lat(0.5, "alarms"), "p50"), (lat(0.99, "alarms"), "p99")], unit="s"),
        ts("Processing time", [(p(0.99, "alarms"), "p99")], unit="s"),
        ts("Correlation state entries", [('sum by (table) (telbus_state_entries{table=~"alarms[-_].*"})', "{{table}}")]),
        ts("Alarm lag (records)", [('sum(telbus_consumer_lag_records{topic="oss.alarm.raw"})', "lag")]),
    ]),
    "sink": ("telbus — ClickHouse sink", [
        ts("Rows inserted / s by table", [(rate("telbus_sink_rows_inserted_total", by="table"), "{{table}}")],
           unit="ops"),
        ts("Store errors and retries / s", [
            (f"sum(rate(telbus_sink_insert_failures_total[{RI}])) or vector(0)", "failures"),
            (f"sum(rate(telbus_sink_insert_retries_total[{RI}]))", "retries")], unit="ops",
           desc="Failures above 0 fire TelbusSinkFailing (the failure counter appears at the first failure)."),
        ts("Store up", [("min(telbus_sink_store_up)", "store up")], kind="stat",
           desc="1 while the last store operation succeeded."),
        ts("INSERT duration p99 by table",
           [(f"histogram_quantile(0.99, sum by (le, table) (rate(telbus_sink_insert_seconds_bucket[{RI}])))",
             "{{table}}")], unit="s"),
        ts("Rows per batch p50", [(f"histogram_quantile(0.5, sum by (le) (rate(telbus_sink_batch_rows_bucket[{RI}])))",
                                   "rows")]),
        ts("Records consumed by the sink / s",
           [(rate("telbus_events_consumed_total", 'telbus_process="sink"', "topic"), "{{topic}}")], unit="ops"),
        ts("Sink lag (records) by topic",
           [('sum by (topic) (telbus_consumer_lag_records{group=~".*sink.*"})', "{{topic}}")]),
    ]),
}


def dashboard(uid: str, title: str, panels: list[dict]) -> dict:
    laid = []
    for i, panel in enumerate(panels):
        panel = dict(panel, id=i + 1, gridPos={"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8})
        laid.append(panel)
    return {
        "uid": f"telbus-{uid}", "title": title, "tags": ["telbus"], "timezone": "browser",
        "schemaVersion": 38, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {"text": "telbus-prometheus",
                                                                    "value": "telbus-prometheus"}}]},
        "annotations": {"list": []},
        "links": [{"title": "telbus", "type": "dashboards", "tags": ["telbus"], "asDropdown": True}],
        "panels": laid,
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for uid, (title, panels) in DASHBOARDS.items():
        (OUT / f"{uid}.json").write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")


if __name__ == "__main__":
    main()
