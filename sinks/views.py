"""Views kept up to date by ClickHouse itself, and why each is built the way it is.

The hazard: a materialized view (MV) fires on every INSERT block. If the sink ever
inserted a Kafka record twice (crash after insert, before the offset commit), a
Summing/Aggregating MV would count it twice, and ``FINAL`` on the source table does not
undo that. Two defences, used together:

1. The sink never inserts a record twice (offset fence, see :mod:`sinks.sink`): on start
   and on every partition assignment it reads ``max(_offset)`` per partition from the
   table and skips what is already stored. Inserts are single blocks sorted by
   (partition, offset), so what a crash leaves behind is a prefix per partition.
2. Where the aggregate can be made idempotent at no real cost, it is: states that give
   the same answer when a row is seen twice (max, argMax, uniqExact, ReplacingMergeTree
   by version). Only monthly usage is a plain SummingMergeTree sum and relies on (1);
   :func:`audit` recomputes every view from the deduplicated (``FINAL``) tables and
   reports any difference, and :func:`rebuild` repopulates a view target from them.

Views (query these):

- ``v_daily_revenue`` (day, province, plan_id, revenue_li, rated_cdrs): revenue per
  Asia/Shanghai calendar day of the call's start, per province where the call happened
  and per plan. RatedCdr has no province, net.cdr.raw has it and the two topics reach the
  sink in any order, so a join at insert time would miss pairs. Instead two MVs (one per
  topic) write into one per-CDR fact table keyed by (cdr_id, start_time) with
  ``SimpleAggregateFunction(max, ...)`` columns: the rated side brings amount and plan
  (status RATED only: REJECTED/DUPLICATE carry 0 li), the raw side brings the province.
  ``max`` is order-independent and idempotent, so the join is correct whatever arrives
  first and however often. A rated CDR whose raw CDR is not stored yet shows province
  ``UNKNOWN`` until it is.
- ``v_monthly_usage`` (billing_period, subscriber_id, voice_seconds, voice_minutes, sms,
  data_kb, data_mb, amount_li, cdrs): RATED CDRs (both directions) per YYYYMM billing
  period; SummingMergeTree fed by an MV on ``bss_cdr_rated``.
- ``v_fraud_alerts_daily`` (day, rule, alerts, subjects): distinct alert ids per rule per
  Asia/Shanghai day of window_start; uniqExact states, so a re-emitted alert (same
  alert_id with more evidence) or a re-delivered record is counted once.
- ``v_open_incidents``: latest change of every incident (argMax over (updated_at or
  opened_at, _offset)) that is neither CLEARED nor MERGED.
- ``v_subscription_state``: latest SubscriptionState per subscriber
  (ReplacingMergeTree by ``version``, read with FINAL). Two states of one subscriber with
  the same version (a processor whose state was reset publishes versions from 1 again)
  resolve to the later one in the log: the replacing engine keeps the last inserted row
  among equal versions, the sink inserts in offset order, and :func:`rebuild` does too.
"""
from __future__ import annotations

TZ = "Asia/Shanghai"

_ARGMAX_KEY = "Tuple(DateTime64(3, 'UTC'), Int64)"

_INCIDENT_COLS = [
    # (name, ClickHouse value type, select expression on oss_incidents)
    ("change", "String", "CAST(change AS String)"),
    ("severity", "String", "CAST(severity AS String)"),
    ("root_ne_id", "String", "root_ne_id"),
    ("root_alarm_id", "String", "root_alarm_id"),
    ("site_id", "Nullable(String)", "site_id"),
    ("alarm_ids", "Array(String)", "alarm_ids"),
    ("affected_subscribers", "Int64", "affected_subscribers"),
    ("affected_services", "Array(String)", "affected_services"),
    ("flapping", "Bool", "flapping"),
    ("opened_at", "DateTime64(3, 'UTC')", "opened_at"),
    ("merged_into", "Nullable(String)", "merged_into"),
    ("updated_at", "Nullable(DateTime64(3, 'UTC'))", "updated_at"),
]

_SUB_COLS = [
    ("msisdn", "Nullable(String)"),
    ("status", "LowCardinality(String)"),
    ("plan_id", "Nullable(String)"),
    ("payment_type", "LowCardinality(Nullable(String))"),
    ("broadband_account", "Nullable(String)"),
    ("broadband_type", "LowCardinality(String)"),
    ("products", "Array(String)"),
    ("updated_at", "DateTime64(3, 'UTC')"),
]


def statements() -> list[str]:
    """DDL of every view, in dependency order (idempotent: IF NOT EXISTS)."""
    s: list[str] = []
    # -- daily revenue per province and plan --------------------------------------
    s.append("""CREATE TABLE IF NOT EXISTS cdr_revenue_facts (
  cdr_id String,
  start_time DateTime64(3, 'UTC'),
  province SimpleAggregateFunction(max, String),
  plan_id SimpleAggregateFunction(max, String),
  amount_li SimpleAggregateFunction(max, Int64),
  rated SimpleAggregateFunction(max, UInt8)
) ENGINE = AggregatingMergeTree ORDER BY (cdr_id, start_time)""")
    s.append("""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_cdr_revenue_rated TO cdr_revenue_facts AS
SELECT cdr_id, rated_at AS start_time, '' AS province, ifNull(plan_id, '') AS plan_id,
       amount_li, toUInt8(1) AS rated
FROM bss_cdr_rated WHERE status = 'RATED'""")
    s.append("""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_cdr_revenue_raw TO cdr_revenue_facts AS
SELECT cdr_id, start_time, province, '' AS plan_id, toInt64(0) AS amount_li, toUInt8(0) AS rated
FROM net_cdr_raw""")
    s.append(f"""CREATE VIEW IF NOT EXISTS v_daily_revenue AS
SELECT toDate(start_time, '{TZ}') AS day,
       if(province = '', 'UNKNOWN', province) AS province,
       plan_id,
       sum(amount_li) AS revenue_li,
       count() AS rated_cdrs
FROM (
  SELECT cdr_id, start_time, max(province) AS province, max(plan_id) AS plan_id,
         max(amount_li) AS amount_li, max(rated) AS rated
  FROM cdr_revenue_facts GROUP BY cdr_id, start_time
)
WHERE rated = 1
GROUP BY day, province, plan_id""")
    # -- monthly usage per subscriber ------------------------------------------------
    s.append("""CREATE TABLE IF NOT EXISTS usage_monthly (
  billing_period String,
  subscriber_id String,
  voice_seconds Int64,
  sms Int64,
  data_kb Int64,
  amount_li Int64,
  cdrs UInt64
) ENGINE = SummingMergeTree ORDER BY (billing_period, subscriber_id)""")
    s.append("""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_usage_monthly TO usage_monthly AS
SELECT billing_period, subscriber_id,
       toInt64(if(service = 'VOICE', billed_units, 0)) AS voice_seconds,
       toInt64(if(service = 'SMS', billed_units, 0)) AS sms,
       toInt64(if(service = 'DATA', billed_units, 0)) AS data_kb,
       amount_li, toUInt64(1) AS cdrs
FROM bss_cdr_rated WHERE status = 'RATED'""")
    s.append("""CREATE VIEW IF NOT EXISTS v_monthly_usage AS
SELECT billing_period, subscriber_id,
       sum(voice_seconds) AS voice_seconds,
       round(voice_seconds / 60, 2) AS voice_minutes,
       sum(sms) AS sms,
       sum(data_kb) AS data_kb,
       round(data_kb / 1024, 3) AS data_mb,
       sum(amount_li) AS amount_li,
       sum(cdrs) AS cdrs
FROM usage_monthly GROUP BY billing_period, subscriber_id""")
    # -- fraud alerts per rule per day -----------------------------------------------
    s.append("""CREATE TABLE IF NOT EXISTS fraud_alerts_daily (
  day Date,
  rule LowCardinality(String),
  alerts AggregateFunction(uniqExact, String),
  subjects AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree ORDER BY (day, rule)""")
    s.append(f"""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_fraud_alerts_daily TO fraud_alerts_daily AS
SELECT toDate(window_start, '{TZ}') AS day, CAST(rule AS String) AS rule,
       uniqExactState(alert_id) AS alerts, uniqExactState(subject) AS subjects
FROM sec_fraud_alerts GROUP BY day, rule""")
    s.append("""CREATE VIEW IF NOT EXISTS v_fraud_alerts_daily AS
SELECT day, rule, uniqExactMerge(alerts) AS alerts, uniqExactMerge(subjects) AS subjects
FROM fraud_alerts_daily GROUP BY day, rule""")
    # -- open incidents ----------------------------------------------------------------
    cols = ",\n  ".join(f"{n} AggregateFunction(argMax, {t}, {_ARGMAX_KEY})" for n, t, _ in _INCIDENT_COLS)
    s.append(f"""CREATE TABLE IF NOT EXISTS incident_latest (
  incident_id String,
  {cols}
) ENGINE = AggregatingMergeTree ORDER BY incident_id""")
    # the ordering key is computed in a subquery: aliasing each state to its column name
    # would otherwise shadow updated_at/opened_at inside the key expression
    sel = ",\n       ".join(f"argMaxState({e}, _k) AS {n}" for n, _, e in _INCIDENT_COLS)
    s.append(f"""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_incident_latest TO incident_latest AS
SELECT incident_id,
       {sel}
FROM (SELECT *, (ifNull(updated_at, opened_at), _offset) AS _k FROM oss_incidents)
GROUP BY incident_id""")
    merged = ",\n         ".join(f"argMaxMerge({n}) AS {n}" for n, _, _ in _INCIDENT_COLS)
    s.append(f"""CREATE VIEW IF NOT EXISTS v_open_incidents AS
SELECT * FROM (
  SELECT incident_id,
         {merged}
  FROM incident_latest GROUP BY incident_id
) WHERE change NOT IN ('CLEARED', 'MERGED')""")
    # -- latest subscription state ------------------------------------------------------
    cols = ",\n  ".join(f"{n} {t}" for n, t in _SUB_COLS)
    s.append(f"""CREATE TABLE IF NOT EXISTS subscription_latest (
  subscriber_id String,
  {cols},
  version Int64
) ENGINE = ReplacingMergeTree(version) ORDER BY subscriber_id""")
    names = ", ".join(n for n, _ in _SUB_COLS)
    s.append(f"""CREATE MATERIALIZED VIEW IF NOT EXISTS mv_subscription_latest TO subscription_latest AS
SELECT subscriber_id, {names}, version FROM bss_subscription_state""")
    s.append(f"""CREATE VIEW IF NOT EXISTS v_subscription_state AS
SELECT subscriber_id, {names}, version FROM subscription_latest FINAL""")
    return s


#: view target -> (the MVs feeding it, recompute SQL from deduplicated source tables
#: producing the same columns as the target). Used by audit() and rebuild().
TARGETS = {
    "cdr_revenue_facts": ("mv_cdr_revenue_rated", "mv_cdr_revenue_raw"),
    "usage_monthly": ("mv_usage_monthly",),
    "fraud_alerts_daily": ("mv_fraud_alerts_daily",),
    "incident_latest": ("mv_incident_latest",),
    "subscription_latest": ("mv_subscription_latest",),
}

#: rebuild() inserts these targets' rows in log order: their engine keeps, among rows of
#: one key and equal version, the one inserted last (the later record in the log)
LOG_ORDER = {"subscription_latest": "ORDER BY _partition, _offset"}

#: For audit: each view's result computed directly from the FINAL tables.
RECOMPUTE = {
    "v_daily_revenue": f"""
SELECT toDate(r.rated_at, '{TZ}') AS day,
       if(ifNull(c.province, '') = '', 'UNKNOWN', c.province) AS province,
       ifNull(r.plan_id, '') AS plan_id,
       sum(r.amount_li) AS revenue_li, count() AS rated_cdrs
FROM (SELECT cdr_id, rated_at, max(amount_li) AS amount_li, max(ifNull(plan_id, '')) AS plan_id
      FROM bss_cdr_rated FINAL WHERE status = 'RATED' GROUP BY cdr_id, rated_at) AS r
LEFT JOIN (SELECT cdr_id, start_time, max(province) AS province
           FROM net_cdr_raw FINAL GROUP BY cdr_id, start_time) AS c
  ON c.cdr_id = r.cdr_id AND c.start_time = r.rated_at
GROUP BY day, province, plan_id""",
    "v_monthly_usage": """
SELECT billing_period, subscriber_id,
       sum(if(service = 'VOICE', billed_units, 0)) AS voice_seconds,
       round(sum(if(service = 'VOICE', billed_units, 0)) / 60, 2) AS voice_minutes,
       sum(if(service = 'SMS', billed_units, 0)) AS sms,
       sum(if(service = 'DATA', billed_units, 0)) AS data_kb,
       round(sum(if(service = 'DATA', billed_units, 0)) / 1024, 3) AS data_mb,
       sum(amount_li) AS amount_li, count() AS cdrs
FROM bss_cdr_rated FINAL WHERE status = 'RATED' GROUP BY billing_period, subscriber_id""",
    "v_fraud_alerts_daily": f"""
SELECT toDate(window_start, '{TZ}') AS day, CAST(rule AS String) AS rule,
       uniqExact(alert_id) AS alerts, uniqExact(subject) AS subjects
FROM sec_fraud_alerts FINAL GROUP BY day, rule""",
    "v_open_incidents": """
SELECT incident_id, change FROM (
  SELECT incident_id, CAST(argMax(change, (ifNull(updated_at, opened_at), _offset)) AS String) AS change
  FROM oss_incidents FINAL GROUP BY incident_id) WHERE change NOT IN ('CLEARED', 'MERGED')""",
    "v_subscription_state": """
SELECT subscriber_id, v AS version, st AS status FROM (
  SELECT subscriber_id, max(version) AS v, argMax(CAST(status AS String), (version, _offset)) AS st
  FROM bss_subscription_state FINAL GROUP BY subscriber_id)""",
}

#: Columns compared by audit for each view (the recompute query gives at least these).
AUDIT_COLUMNS = {
    "v_daily_revenue": ("day", "province", "plan_id", "revenue_li", "rated_cdrs"),
    "v_monthly_usage": ("billing_period", "subscriber_id", "voice_seconds", "sms", "data_kb",
                        "amount_li", "cdrs"),
    "v_fraud_alerts_daily": ("day", "rule", "alerts", "subjects"),
    "v_open_incidents": ("incident_id", "change"),
    "v_subscription_state": ("subscriber_id", "version", "status"),
}


def audit(client, sample: int = 10) -> dict[str, dict]:
    """Compare every view with a recomputation from the deduplicated tables (in SQL).

    ``client`` needs only ``query(sql).result_rows`` (a store client, or the read-only
    endpoint adapter). Returns ``{view: {"ok", "rows", "missing", "extra"}}``: missing
    and extra are row counts, with up to ``sample`` example rows each.
    """
    out = {}
    for view, sql in RECOMPUTE.items():
        cols = ", ".join(AUDIT_COLUMNS[view])
        have = f"SELECT {cols} FROM {view}"
        want = f"SELECT {cols} FROM ({sql})"
        n_want = client.query(f"SELECT count() FROM ({want})").result_rows[0][0]
        missing = client.query(f"SELECT * FROM (({want}) EXCEPT ({have})) LIMIT {sample}").result_rows
        extra = client.query(f"SELECT * FROM (({have}) EXCEPT ({want})) LIMIT {sample}").result_rows
        n_missing = client.query(f"SELECT count() FROM (({want}) EXCEPT ({have}))").result_rows[0][0] \
            if missing else 0
        n_extra = client.query(f"SELECT count() FROM (({have}) EXCEPT ({want}))").result_rows[0][0] \
            if extra else 0
        out[view] = {"ok": not missing and not extra, "rows": int(n_want),
                     "missing": int(n_missing), "extra": int(n_extra),
                     "missing_sample": [[str(v) for v in r] for r in missing],
                     "extra_sample": [[str(v) for v in r] for r in extra]}
    return out


def _mv_select(client, mv: str) -> str:
    """The SELECT of a materialized view, read back from the store."""
    ddl = client.query(f"SELECT create_table_query FROM system.tables "
                       f"WHERE database = currentDatabase() AND name = '{mv}'").result_rows
    if not ddl:
        raise KeyError(f"no materialized view {mv}")
    text = ddl[0][0]
    i = text.upper().find(" AS SELECT ")
    if i < 0:
        raise ValueError(f"cannot read the SELECT of {mv}")
    return text[i + 4:]


def rebuild(client, target: str) -> None:
    """Repopulate a view target from its MVs' SELECTs over the FINAL source tables.

    Run with the sink stopped (or from the sink process between batches): rows inserted
    into the sources while this runs would be counted twice.
    """
    if target not in TARGETS:
        raise KeyError(f"unknown view target {target}; one of {', '.join(TARGETS)}")
    client.command(f"TRUNCATE TABLE {target}")
    for mv in TARGETS[target]:
        select = _mv_select(client, mv)
        order = LOG_ORDER.get(target, "")
        client.command(f"INSERT INTO {target} {select} {order}", settings={"final": 1})
