"""``bench/results/chaos.json`` and the table printed at the end."""
from __future__ import annotations

import json
import time


def write(results: list, rate: float, seconds: float):
    from bench.common import RESULTS, machine

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "chaos.json"
    doc = {"benchmark": "chaos", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(), "load_records_per_s": rate, "suite_seconds": round(seconds, 1),
           "definitions": {
               "recover_s": "fault end -> rating backlog (CDRs sent - CDRs rated) back under 2 s of CDRs for good",
               "sink_recover_s": "fault end -> sink group lag over every contract topic back under 3 s of load for good",
               "delayed": "CDRs sent during the case whose RatedCdr appeared more than 5 s after sending",
               "peak_backlog": "highest rating backlog from the fault on (CDRs)",
               "peak_sink_lag": "highest sink group lag from the fault on (records)"},
           "ok": all(r["ok"] for r in results if r.get("run")),
           "cases": results}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def _checks(r: dict) -> str:
    return " ".join(f"{k}={'ok' if c['ok'] else 'FAIL'}" for k, c in r.get("checks", {}).items())


def line(r: dict) -> str:
    if not r.get("run"):
        return f"{r['case']}: not run ({r.get('reason', '')[:60]})"
    return (f"{r['case']}: {'ok' if r['ok'] else 'FAILED'} recover={r.get('recover_s')}s "
            f"sink_recover={r.get('sink_recover_s')}s delayed={r.get('delayed')}/{r.get('cdrs_in_case')} "
            f"peak_backlog={r.get('peak_backlog')} peak_sink_lag={r.get('peak_sink_lag')} {_checks(r)}"
            + (f" error={r['error']}" if r.get("error") else ""))


def table(results: list) -> str:
    head = f"{'case':26} {'result':8} {'fault s':>7} {'recover s':>9} {'sink rec s':>10} {'delayed':>9} " \
           f"{'p99 s':>6} {'max s':>6} {'peak backlog':>12} {'peak sink lag':>13}"
    rows = [head, "-" * len(head)]
    for r in results:
        if not r.get("run"):
            rows.append(f"{r['case']:26} {'not run':8} ({r.get('reason', '')[:70]}...)")
            continue
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        rows.append(f"{r['case']:26} {'ok' if r['ok'] else 'FAILED':8} {fmt(r.get('fault_s')):>7} "
                    f"{fmt(r.get('recover_s')):>9} {fmt(r.get('sink_recover_s')):>10} "
                    f"{fmt(r.get('delayed')):>9} {fmt(r.get('latency_p99_s')):>6} {fmt(r.get('latency_max_s')):>6} "
                    f"{fmt(r.get('peak_backlog')):>12} {fmt(r.get('peak_sink_lag')):>13}")
        if not r["ok"]:
            rows.append(f"{'':26} {_checks(r)} {r.get('error', '')}")
    return "\n".join(rows)
