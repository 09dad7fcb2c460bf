"""Rating section of ``telbus demo run``: rated totals per service and credit control."""
from __future__ import annotations

from collections import Counter, defaultdict


def report(ctx) -> str | None:
    from processors.alarms.report import read_all
    from telbus import jsonform

    rated = [v for _p, _o, v in read_all("bss.cdr.rated")]
    if not rated:
        return None
    lines = ["-- rating and online charging --"]
    per = defaultdict(lambda: [0, 0, 0])   # service -> [records, billed units, amount li]
    status = Counter(r["status"] for r in rated)
    reasons = Counter(r["reject_reason"] for r in rated if r["status"] == "REJECTED")
    for r in rated:
        if r["status"] == "RATED":
            t = per[r["service"]]
            t[0] += 1
            t[1] += r["billed_units"]
            t[2] += r["amount_li"]
    units = {"VOICE": "s", "SMS": "msg", "DATA": "KB"}
    for service in ("VOICE", "SMS", "DATA"):
        n, u, li = per[service]
        lines.append(f"  {service:5} {n:>6} rated  {u:>12} {units[service]:<3} billed  {li / 1000:>12,.3f} yuan ({li} li)")
    total = sum(t[2] for t in per.values())
    lines.append(f"  total {sum(t[0] for t in per.values()):>6} rated  {total / 1000:>29,.3f} yuan")
    lines.append("  status: " + ", ".join(f"{k}={v}" for k, v in sorted(status.items()))
                 + ("  (" + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) + ")" if reasons else ""))
    cc = [v for _p, _o, v in read_all("ocs.credit.control")]
    lines.append(f"  credit control events: {len(cc)}")
    for c in cc[:10]:
        lines.append(f"    {c['action']:7} {c['subscriber_id']}  balance {c['balance_li']} li, threshold "
                     f"{c['threshold_li']} li (cause {c['cause_event_id']})")
    return "\n".join(lines)
