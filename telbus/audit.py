"""``telbus audit rating|sink``: reconciliations an auditor runs; exit 0 means they agree.

The work lives beside what it checks (``processors.rating.audit``, ``sinks.audit``); this
module only gives them one command.
"""
from __future__ import annotations

import importlib


def _dispatch(module: str):
    def run(args) -> int:
        return importlib.import_module(module).main(args)
    return run


def register(sub) -> None:
    p = sub.add_parser("audit", help="reconcile outputs against the event log")
    asub = p.add_subparsers(dest="audit_kind", required=True)

    r = asub.add_parser("rating", help="re-rate a subscriber's period from the log and diff with bss.cdr.rated")
    r.add_argument("--subscriber", required=True)
    r.add_argument("--period", required=True, help="YYYYMM (Asia/Shanghai)")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(func=_dispatch("processors.rating.audit"))

    s = asub.add_parser("sink", help="compare Kafka offsets with ClickHouse rows per topic and partition")
    s.add_argument("--topic", action="append", help="only these topics (repeatable)")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=_dispatch("sinks.audit"))
