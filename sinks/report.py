"""ClickHouse section of ``telbus demo run``: a few analytical answers from the store,
read through the running sink's query endpoint (or the store directly when it is down)."""
from __future__ import annotations

QUESTIONS = [
    ("revenue per province (yuan)",
     "SELECT province, round(sum(revenue_li) / 1000, 3) AS yuan, sum(rated_cdrs) AS cdrs "
     "FROM v_daily_revenue GROUP BY province ORDER BY yuan DESC"),
    ("top subscribers by usage",
     "SELECT subscriber_id, sum(voice_minutes) AS minutes, sum(sms) AS sms, round(sum(data_mb), 1) AS mb, "
     "sum(amount_li) AS li FROM v_monthly_usage GROUP BY subscriber_id ORDER BY li DESC LIMIT 5"),
    ("fraud alerts per rule",
     "SELECT rule, sum(alerts) AS alerts FROM v_fraud_alerts_daily GROUP BY rule ORDER BY rule"),
    ("incidents", "SELECT (SELECT uniqExact(incident_id) FROM oss_incidents FINAL) AS incidents, "
                  "(SELECT count() FROM v_open_incidents) AS open_now, "
                  "(SELECT count() FROM oss_alarm_raw FINAL) AS raw_alarms"),
]


def report(ctx) -> str | None:
    from sinks.queryserver import run_query

    lines = ["-- analytical store (ClickHouse) --"]
    for title, sql in QUESTIONS:
        lines.append(f"  {title}:")
        try:
            text = run_query(sql, "table")
        except Exception as exc:   # the report goes on; the reason is shown
            text = f"(query failed: {exc})"
        lines.extend("    " + line for line in text.rstrip().splitlines())
    return "\n".join(lines)
