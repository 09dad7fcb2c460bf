"""CLI commands of the sink package: ``telbus sink``, ``telbus query``, ``telbus views``."""
from __future__ import annotations

import json
import sys


def cmd_sink(args) -> int:
    from sinks import sink

    return sink.main(batch_rows=args.batch_rows, batch_ms=args.batch_ms,
                     serve_query=False if args.no_query else None, group=args.group)


def cmd_query(args) -> int:
    from sinks.queryserver import QueryError, format_result, query_result

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    try:
        res = query_result(sql, limit=args.limit)
    except QueryError as exc:
        if args.format == "json":
            print(json.dumps({"error": str(exc), "kind": exc.kind}), file=sys.stderr)
        else:
            print(f"telbus query: {exc.kind}: {exc}", file=sys.stderr)
        return 2 if exc.kind in ("bad_sql", "forbidden", "limit") else 1
    sys.stdout.write(format_result(res, args.format))
    if res.get("truncated") and args.format != "table":
        print(f"telbus query: truncated at {res['row_count']} rows (--limit)", file=sys.stderr)
    return 0


def cmd_views(args) -> int:
    """Audit the views against the FINAL tables, or rebuild a view's target table."""
    from sinks import views
    from sinks.queryserver import endpoint_url
    from sinks.store import Store, default_dsn, is_embedded

    if args.action == "audit":
        from sinks.audit import EndpointClient

        res = views.audit(EndpointClient())
        print(json.dumps(res, indent=2))
        return 0 if all(v["ok"] for v in res.values()) else 1
    if is_embedded(default_dsn()) and endpoint_url():
        print("telbus views rebuild: stop the sink first (it owns the store)", file=sys.stderr)
        return 2
    st = Store()
    try:
        targets = [args.target] if args.target else list(views.TARGETS)
        for t in targets:
            views.rebuild(st.client, t)
            print(f"rebuilt {t}")
    finally:
        st.close()
    return 0


def register(sub) -> None:
    s = sub.add_parser("sink", help="write every contract topic into the ClickHouse store")
    s.add_argument("--batch-rows", type=int, help="rows per insert (TELBUS_SINK_BATCH_ROWS, default 50000)")
    s.add_argument("--batch-ms", type=int, help="max wait of a record before insert (TELBUS_SINK_BATCH_MS, "
                                                "default 1000)")
    s.add_argument("--group", help="consumer group (TELBUS_SINK_GROUP, default telbus-sink)")
    s.add_argument("--no-query", action="store_true", help="do not serve the read-only SQL endpoint")
    s.set_defaults(func=cmd_sink)

    q = sub.add_parser("query", help="read-only SQL on the store (works while the stack runs)")
    q.add_argument("sql", help="one SELECT/WITH/SHOW/DESCRIBE/EXPLAIN statement, or - for stdin")
    q.add_argument("--format", choices=["table", "json", "csv"], default="table")
    q.add_argument("--limit", type=int, help="max rows (default TELBUS_QUERY_MAX_ROWS or 10000)")
    q.set_defaults(func=cmd_query)

    v = sub.add_parser("views", help="check or rebuild the store's views")
    v.add_argument("action", choices=["audit", "rebuild"])
    v.add_argument("--target", help="rebuild only this view target table")
    v.set_defaults(func=cmd_views)
