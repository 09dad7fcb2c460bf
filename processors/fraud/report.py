"""Fraud section of ``telbus demo run``: alerts found, against what the generator injected."""
from __future__ import annotations


def report(ctx) -> str | None:
    from processors.alarms.report import read_all
    from telbus import jsonform

    alerts = {}
    for _p, _o, a in read_all("sec.fraud.alerts"):
        alerts[a["alert_id"]] = a     # an alert id re-published after a restart counts once
    injected = (ctx.get("manifest") or {}).get("fraud") or {}
    lines = ["-- fraud detection --", f"  alerts: {len(alerts)} distinct"]
    by_rule: dict[str, list] = {}
    for a in alerts.values():
        by_rule.setdefault(a["rule"], []).append(a)
    rules = sorted(set(by_rule) | set(injected))
    for rule in rules:
        found = by_rule.get(rule, [])
        subjects = sorted({a["subject"] for a in found})
        want = sorted((injected.get(rule) or {}).get("subjects", []))
        verdict = "" if not injected else ("  match" if subjects == want else f"  MISMATCH (injected {want})")
        lines.append(f"  {rule:22} {len(found)} alert(s) {', '.join(subjects)}{verdict}")
        for a in found[:1]:
            ev = ", ".join(f"{k}={v}" for k, v in sorted(a["evidence"].items()))
            lines.append(f"      {a['severity']}, {jsonform.format_time(a['window_start'])} .. "
                         f"{jsonform.format_time(a['window_end'])}: {ev}")
    return "\n".join(lines)
