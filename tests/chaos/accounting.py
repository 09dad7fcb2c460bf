"""The accounting at the end of every case, over everything sent since the suite started.

* CDRs: each one the load delivered is in ``bss.cdr.rated`` (read_committed) exactly once
  by cdr_id, or in ``net.cdr.raw.dlq``; nothing is rated that was not sent; and a straight
  re-rating of the whole log with the pure rules (what ``telbus audit rating`` does for
  one subscriber, here for all of them at once) gives the very records the live processor
  published: no charge lost, none applied twice to a balance.
* Orders: every order the load sent has reached COMPLETED in ``bss.order.status``, and
  each subscriber's latest ``bss.subscription.state`` holds the product iff its last
  order added it.
* ClickHouse: ``telbus audit sink`` (``sinks.audit.run``) is ok and nothing is behind;
  each input topic holds exactly what was published to it.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from processors.rating import audit as rating_audit
from tests.chaos.load import ALARM, CDR, LOGIN, ORDER, PRODUCT
from tests.helpers import read_topic


def _values(topic: str, timeout: float = 120.0):
    return read_topic(topic, timeout=timeout)


def check_rating(load) -> dict:
    sent = set(load.sent[CDR])
    rated = sorted(_values("bss.cdr.rated"), key=lambda r: (r[0], r[1]))
    counts = Counter(v["cdr_id"] for _p, _o, _k, v in rated)
    in_dlq = {v.get("cdr_id") for _p, _o, _k, v in _values("net.cdr.raw.dlq")} & sent
    missing = sent - set(counts) - in_dlq
    twice = sorted(c for c, n in counts.items() if n > 1)
    unexpected = sorted(set(counts) - sent)
    statuses = Counter(v["status"] for _p, _o, _k, v in rated)

    plans = [(o, v) for _p, o, _k, v in _values("bss.tariff.plans")]
    events, cdrs, live = defaultdict(list), defaultdict(list), defaultdict(list)
    for _p, o, _k, v in _values("bss.subscriber.events"):
        events[v.get("subscriber_id")].append((o, v))
    for _p, o, _k, v in _values(CDR):
        cdrs[v.get("subscriber_id")].append((o, v))
    for _p, _o, _k, v in rated:
        live[v["subscriber_id"]].append(v)
    differing = []
    for sub in sorted(set(cdrs) | set(live)):
        expected = rating_audit.rerate(sub, plans, events.get(sub, []), cdrs.get(sub, []))
        pick = lambda rs: [{f: r.get(f) for f in rating_audit.FIELDS} | {"cdr_id": r["cdr_id"]} for r in rs]  # noqa: E731
        if pick(expected) != pick(live.get(sub, [])):
            differing.append(sub)
    ok = not missing and not twice and not unexpected and not differing
    return {"ok": ok, "sent": len(sent), "rated": sum(counts.values()), "statuses": dict(statuses),
            "in_dlq": len(in_dlq), "missing": len(missing), "charged_twice": len(twice),
            "unexpected": len(unexpected), "rerate_differs_subscribers": len(differing),
            "examples": {"missing": sorted(missing)[:5], "twice": twice[:5], "differs": differing[:5]}}


def check_orders(load) -> dict:
    final: dict[str, str] = {}
    for _p, _o, _k, v in _values("bss.order.status"):
        if v["order_id"] in load.orders:
            final[v["order_id"]] = v["status"]
    not_completed = sorted(o for o in load.orders if final.get(o) != "COMPLETED")
    last_action: dict[str, str] = {}
    for oid in sorted(load.orders, key=lambda o: int(o.split("-")[1])):
        sub, action = load.orders[oid]
        last_action[sub] = action
    latest: dict[str, dict] = {}
    for _p, _o, k, v in _values("bss.subscription.state"):
        if k in last_action and v["version"] >= latest.get(k, {"version": -1})["version"]:
            latest[k] = v
    wrong = sorted(s for s, a in last_action.items()
                   if (PRODUCT[0] in (latest.get(s) or {}).get("products", [])) != (a == "ADD"))
    return {"ok": not not_completed and not wrong, "orders": len(load.orders),
            "not_completed": len(not_completed), "state_wrong": len(wrong),
            "examples": {"not_completed": not_completed[:5], "state_wrong": wrong[:5]}}


def sink_audit() -> dict:
    from sinks import audit

    return audit.run()


def check_sink(load, reference_counts: dict, res: dict | None = None) -> dict:
    res = res or sink_audit()
    topics = {r["topic"]: r for r in res["topics"]}
    behind = {t: r.get("behind") for t, r in topics.items()
              if r.get("behind") and not (r.get("compacted") and r["behind"] < 0)}
    published = {t: load.delivered[t] + reference_counts.get(t, 0) for t in (CDR, LOGIN, ALARM, ORDER)}
    in_kafka = {t: topics[t]["kafka_records"] for t in published if t in topics}
    stored = {t: topics[t]["stored"] for t in published if t in topics}
    stored_raw = {t: topics[t]["stored_raw"] for t in published if t in topics}    # without FINAL
    views_bad = sorted(v for v, r in res["views"].items() if not r["ok"])
    ok = res["ok"] and not behind and in_kafka == published and stored == published
    return {"ok": ok, "audit_ok": res["ok"], "behind": behind, "views_bad": views_bad,
            "published": published, "in_kafka": in_kafka, "stored": stored, "stored_raw": stored_raw,
            "problems": [f"{r['topic']} partition {p['partition']}: {pr}" for r in res["topics"]
                         for p in r.get("partitions", []) for pr in p["problems"]][:10]}
