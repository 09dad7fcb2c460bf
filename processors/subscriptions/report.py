"""Subscription sync section of ``telbus demo run``: orders, states, a live view."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter


def _views_base() -> str | None:
    try:
        from telbus import stack

        return stack.status().get("urls", {}).get("views")
    except Exception:
        return None


def get_json(url: str, timeout: float = 15):
    """(HTTP status, parsed body) of a views lookup; (None, None) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return None, None


def report(ctx) -> str | None:
    from processors.subscriptions.cli import read_compacted

    counts = ctx.get("counts", {})
    if not counts.get("bss.order.events") and not counts.get("bss.subscriber.events"):
        return None
    lines = ["-- subscription sync --"]
    try:
        status_recs, _ = read_compacted("bss.order.status")
        state_recs, _ = read_compacted("bss.subscription.state")
    except Exception as exc:  # the report must not break the demo output
        return "\n".join(lines + [f"  (outputs unreadable: {exc})"])
    final = {}
    for r in sorted(status_recs, key=lambda r: (r["partition"], r["offset"])):
        if r["value"]:
            final[r["value"]["order_id"]] = r["value"]["status"]
    by = Counter(final.values())
    lines.append(f"  orders: {len(final)}  " + "  ".join(f"{k}={by[k]}" for k in
                                                      ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")))
    expected = (ctx.get("manifest") or {}).get("orders")
    if expected:
        want_done = expected.get("completed_orders", 0) + expected.get("without_work_orders", 0)
        ok = by["COMPLETED"] == want_done and by["FAILED"] == expected.get("failed_orders", 0)
        lines.append(f"  demo expects COMPLETED={want_done} (incl. {expected.get('without_work_orders', 0)} "
                     f"without work orders) FAILED={expected.get('failed_orders', 0)}: "
                     f"{'match' if ok else 'MISMATCH'}")
    latest = {}
    for r in sorted(state_recs, key=lambda r: (r["partition"], r["offset"])):
        if r["value"]:
            latest[r["key"]] = r["value"]
    if latest:
        with_products = sum(1 for v in latest.values() if v["products"])
        lines.append(f"  subscription states: {len(state_recs)} records, {len(latest)} subscribers, "
                     f"{with_products} with products, highest version {max(v['version'] for v in latest.values())}")
    dlq = counts.get("bss.order.events.dlq", 0) + counts.get("bss.subscriber.events.dlq", 0)
    lines.append(f"  dead letters (order/subscriber events): {dlq}")
    base = _views_base()
    sample = next((v for _k, v in sorted(latest.items()) if v["products"] and v.get("broadband_account")), None)
    if base and sample:
        for kind, key in (("ehome", sample["broadband_account"]), ("vnet", sample["broadband_account"]),
                          ("ismp", sample["msisdn"])):
            code, body = get_json(f"{base}/{kind}/{key}")
            lines.append(f"  GET {base}/{kind}/{key} -> {code} {json.dumps(body, ensure_ascii=False)[:300]}")
    elif base:
        lines.append(f"  views: {base}/{{ehome|vnet|ismp}}/{{key}}")
    return "\n".join(lines)
