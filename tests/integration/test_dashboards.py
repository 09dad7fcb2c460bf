"""Every Grafana panel query, run against a real Prometheus that scraped real telbus processes.

Grafana is not packaged here, so the dashboards are proven the way Grafana would use them:
the Debian ``prometheus`` binary scrapes the metrics endpoints of processes started by the
test (the worker, a lag exporter, and the sink when it exists), a demo workload (plus a few
undecodable records, so dead letters are real) runs through them, and each panel expression
must parse and return data. The test skips cleanly when ``prometheus`` is not installed.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import Proc, cli, wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")
VARS = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "5m"}
DEADLINE_S = 240


def panel_exprs(path: Path):
    d = json.loads(path.read_text())
    for panel in d["panels"]:
        for t in panel["targets"]:
            expr = t["expr"]
            for k, v in VARS.items():
                expr = expr.replace(k, v)
            yield panel["title"], t["refId"], expr


def defined_metric_names() -> set[str]:
    import prometheus_client

    import telbus.metrics  # noqa: F401  (registers the shared metrics)

    if importlib.util.find_spec("sinks") is not None and importlib.util.find_spec("sinks.sink") is not None:
        importlib.import_module("sinks.sink")  # the sink's own telbus_sink_* metrics

    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for fam in prometheus_client.REGISTRY.collect():
        if fam.name.startswith("telbus_"):
            names.update(fam.name + sfx for sfx in suffixes.get(fam.type, [""]))
    return names


def test_dashboards_use_only_defined_metrics():
    assert {p.stem for p in DASHBOARDS} >= {"overview", "rating", "fraud", "alarms", "sink"}
    known = defined_metric_names()
    for path in DASHBOARDS:
        for title, ref, expr in panel_exprs(path):
            # metric names (telbus_process is the scrape target label, not a metric)
            used = set(re.findall(r"\btelbus_[a-z_]+", expr)) - {"telbus_process"}
            assert used or expr.startswith("up{"), f"{path.name} / {title}: no telbus metric in {expr}"
            assert used <= known, f"{path.name} / {title} {ref}: unknown metrics {used - known}"


def test_dashboards_are_generated_from_the_builder(tmp_path):
    before = {p.name: p.read_text() for p in DASHBOARDS}
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "ops/grafana/build_dashboards.py")],
                   check=True, timeout=60)
    assert {p.name: p.read_text() for p in DASHBOARDS} == before, "run ops/grafana/build_dashboards.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _query(base: str, expr: str) -> dict:
    try:
        return _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    except urllib.error.HTTPError as exc:  # 400 on a parse error: return the body
        return json.loads(exc.read())


def _start_worker(logs: Path) -> Proc:
    """The worker; started a second time if it dies right after becoming ready.

    Known issue (reported): on a fresh broker the fraud service can crash reading the
    watermarks of the state topic it has just created (NOT_LEADER_FOR_PARTITION). The second
    start finds the topic led. The warning keeps the first crash visible in the test report.
    """
    import warnings

    for attempt in (1, 2):
        # Faust refuses web port 0 (conftest's default), so the worker gets a free port here.
        w = Proc("worker", ["worker"], env={"TELBUS_WORKER_WEB_PORT": str(_free_port())}, log_dir=logs).start(180)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and w.proc.poll() is None:
            time.sleep(0.2)
        if w.proc.poll() is None:
            return w
        warnings.warn(f"worker exited after start (attempt {attempt}):\n{w.log_tail(40)}")
    raise AssertionError(f"worker keeps exiting:\n{w.log_tail(60)}")


@pytest.fixture(scope="module")
def prometheus(broker, tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (apt-get install -y prometheus)")
    from telbus import kafka, lag

    tmp = tmp_path_factory.mktemp("prom")
    logs = tmp / "logs"
    import topics as catalog

    # Topics the session fixture just created may not have leaders yet; a processor that
    # starts in that window fails its first watermark request (reported to the lead), so wait.
    admin = kafka.admin()

    def leaders_elected():
        md = admin.list_topics(timeout=10)
        return all(t.name in md.topics and md.topics[t.name].partitions
                   and all(pm.leader >= 0 for pm in md.topics[t.name].partitions.values())
                   for t in catalog.catalog().values())

    wait_until(leaders_elected, 60, 0.5, "partition leaders for every catalog topic")
    worker = _start_worker(logs)
    procs = [worker,
             Proc("lag-exporter", ["ops", "lag-exporter", "--group", "telbus-subscriptions", "--group", "telbus-rating",
                                   "--interval", "1"], log_dir=logs).start(60)]
    sink_available = importlib.util.find_spec("sinks") is not None and \
        importlib.util.find_spec("sinks.commands") is not None
    if sink_available:
        procs.append(Proc("sink", ["sink"], log_dir=logs).start(180))
    prom = None
    try:
        targets = lag.write_targets(tmp / "targets" / "telbus.json")
        assert {t["labels"]["telbus_process"] for t in targets} >= {"worker", "lag-exporter"}, targets
        port = _free_port()
        (tmp / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ROOT / 'ops/prometheus/alerts.yml'}
scrape_configs:
  - job_name: telbus
    file_sd_configs:
      - files: ['{tmp / 'targets'}/*.json']
        refresh_interval: 1s
""")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=open(tmp / "prometheus.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        base = f"http://127.0.0.1:{port}"

        def ready():
            assert prom.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            try:
                return urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200
            except OSError:
                return False

        wait_until(ready, 60, 0.2, "prometheus ready")
        # the workload: the demo (every processor gets input) and undecodable records (dead letters)
        cli("demo", "publish", "--subscribers", "40", "--cdrs", "400", "--force", check=True, timeout=300)
        p = kafka.producer()
        for topic in ("net.cdr.raw", "sec.login.events", "oss.alarm.raw"):
            p.produce(topic, b"\xc3\x01not avro at all", b"k")
        assert p.flush(30) == 0
        yield {"base": base, "sink": sink_available, "procs": procs, "tmp": tmp}
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(30)
            except subprocess.TimeoutExpired:
                prom.kill()
        for proc in reversed(procs):
            proc.stop()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_query_parses_and_returns_data(prometheus, path):
    if path.stem == "sink" and not prometheus["sink"]:
        pytest.skip("no sink process in this tree yet (sinks.commands missing)")
    base = prometheus["base"]
    exprs = list(panel_exprs(path))
    for title, ref, expr in exprs:  # parse errors fail at once, whatever the data
        res = _query(base, expr)
        assert res.get("status") == "success", f"{path.name} / {title} {ref}: {res.get('error')}\n{expr}"
    pending = {(t, r): e for t, r, e in exprs}
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for k, expr in list(pending.items()):
            if _query(base, expr)["data"]["result"]:
                del pending[k]
        if pending:
            time.sleep(1)
    logs = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in prometheus["procs"])
    assert not pending, f"{path.name}: panels without data after {DEADLINE_S}s:\n" + \
        "\n".join(f"  {t} {r}: {e}" for (t, r), e in pending.items()) + "\n" + logs
