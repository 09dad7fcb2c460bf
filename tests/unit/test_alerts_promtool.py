"""Alert rules and Prometheus config checked by promtool (Debian package ``prometheus``)."""
import shutil
import subprocess
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install -y prometheus)")


def _run(*args):
    res = subprocess.run([PROMTOOL, *args], cwd=OPS, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def test_rules_are_valid():
    assert "SUCCESS" in _run("check", "rules", "alerts.yml")


def test_alert_unit_tests_pass():
    assert "SUCCESS" in _run("test", "rules", "alerts_test.yml")


def test_prometheus_config_is_valid():
    _run("check", "config", "prometheus.yml")


def test_every_alert_has_a_firing_and_a_silent_case():
    import re

    alerts = set(re.findall(r"^\s*- alert: (\S+)", (OPS / "alerts.yml").read_text(), re.M))
    cases = re.findall(r"alertname: (\S+)\n\s*exp_alerts:(.*)", (OPS / "alerts_test.yml").read_text())
    cases = [(n, r.split("#")[0].strip()) for n, r in cases]
    fired = {name for name, rest in cases if rest != "[]"}
    silent = {name for name, rest in cases if rest == "[]"}
    assert len(alerts) >= 6
    assert alerts == fired, f"alerts without a firing test case: {alerts - fired}"
    assert alerts == silent, f"alerts without a silent test case: {alerts - silent}"
