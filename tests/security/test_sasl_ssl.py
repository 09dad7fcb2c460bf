"""Every telbus process through SASL_SSL (SCRAM-SHA-512 over TLS) with ACLs, TELBUS_* settings only.

Against a broker these tests configure themselves (tests/security/cluster.py): a CA and
certificates generated here, SCRAM users created when the storage is formatted, KRaft's
StandardAuthorizer with nothing allowed but what ACL_PLAN grants. Covered: the CLI
(topics, produce, consume, status, query), the worker (a librdkafka loop per processor),
the sink; wrong passwords, a wrong CA, plaintext
clients, ACL denials; the read-only query endpoint behind a bearer token; no secret in any
log, status or metrics output.
"""
from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest

from telbus import codec
from telbus.localbroker import free_port
from telbus.tls import TestCA
from tests.helpers import Proc, cli, wait_until
from tests.samples import SAMPLES
from tests.security.cluster import INPUTS, listening_addresses, produce_summary, read_all
from tests.security.conftest import as_user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

T = 1795140000000          # 2026-11-20T02:00:00Z
DAY = 86_400_000
QUERY_TOKEN = f"qt-{secrets.token_hex(16)}"
PII_KEY = f"pii-{secrets.token_hex(16)}"
WRONG = f"wrong-{secrets.token_hex(8)}"


def jl(*events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def scenario(uid: str) -> dict[str, list[dict]]:
    plan, sub = f"P-{uid}", f"S-{uid}"
    return {
        "bss.tariff.plans": [{
            "event_type": "TariffPlan", "event_id": f"tp-{uid}", "event_time": T - 30 * DAY, "source": "IBSS",
            "plan_id": plan, "version": 1, "effective_from": T - 30 * DAY, "payment_type": "PREPAID",
            "credit_limit_li": 0,
            "voice": {"domestic_li_per_min": 150, "international_li_per_min": 3000, "increment_s": 6,
                      "free_domestic_min": 0},
            "sms": {"domestic_li": 100, "international_li": 1000, "free_domestic_sms": 0},
            "data": {"li_per_mb": 300, "free_mb": 0}}],
        "bss.subscriber.events": [{
            "event_type": "SubscriberCreated", "event_id": f"sc-{uid}", "event_time": T - DAY, "source": "CRM-GD",
            "subscriber_id": sub, "msisdn": "18912345678", "account_id": f"A-{uid}", "home_province": "GD",
            "payment_type": "PREPAID", "plan_id": plan, "real_name": "Zhang San", "id_number": "440101199001011234",
            "broadband_account": f"bb-{uid}", "broadband_type": "E8_1", "access_ne_id": None}],
        "net.cdr.raw": [{
            "event_type": "Cdr", "event_id": f"cdr-{uid}", "event_time": T, "source": "MEDIATION",
            "cdr_id": f"C-{uid}", "subscriber_id": sub, "service": "VOICE", "direction": "MO",
            "calling_number": "18912345678", "called_number": "13800000000", "start_time": T, "duration_s": 60,
            "cell_id": "C1", "province": "GD"}],
    }


def http(url: str, body: dict | None = None, token: str | None = None, timeout: float = 30):
    """(status, parsed JSON or text) of a GET, or of a JSON POST when ``body`` is given."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def secrets_of(cluster) -> list[str]:
    return [*cluster.passwords.values(), QUERY_TOKEN, PII_KEY, WRONG]


def assert_no_secret(text: str, cluster, where: str) -> None:
    leaked = [s for s in secrets_of(cluster) if s in text]
    assert not leaked, f"secret(s) {[s[:6] + '…' for s in leaked]} found in {where}"


# ----------------------------------------------------------------------------------------
# the running stack: worker (all processors) and sink, each as its own principal
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(secure_cluster):
    c = secure_cluster
    worker = Proc("worker", ["worker", "--loglevel", "info"],
                  env={**c.env("worker"), "TELBUS_WORKER_WEB_PORT": str(free_port())})
    sink = Proc("sink", ["sink"],
                env={**c.env("sink"), "TELBUS_SINK_BATCH_MS": "200", "TELBUS_PII_KEY": PII_KEY,
                     "TELBUS_QUERY_TOKEN": QUERY_TOKEN, "TELBUS_LOG_LEVEL": "INFO"})
    try:
        worker.start(ready_timeout=240)
        sink.start(ready_timeout=240)
        yield {"worker": worker, "sink": sink}
    finally:
        sink.stop()
        worker.stop()


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------

def test_topics_apply_and_list_as_admin(secure_cluster):
    out = secure_cluster.topics_apply.stdout
    assert "published" in out and "_telbus.schemas" in out
    res = as_user(secure_cluster, "admin", "topics", "list")
    assert res.returncode == 0, res.stderr
    assert "net.cdr.raw" in res.stdout and "drift" not in res.stdout


def test_producer_publishes_every_input_topic_and_reader_consumes_it(secure_cluster):
    for topic in INPUTS:
        res = as_user(secure_cluster, "producer", "produce", topic, input=jl(*SAMPLES[topic]))
        assert res.returncode == 0, f"{topic}: {res.stderr}"
        assert produce_summary(res.stderr)["published"] == len(SAMPLES[topic])
    res = as_user(secure_cluster, "reader", "consume", "sec.login.events", "--from-beginning",
                  "--max", "1", "--timeout", "20")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.splitlines()[0])
    assert rec["value"]["login_id"] == SAMPLES["sec.login.events"][0]["login_id"]


@pytest.fixture(scope="module")
def refusals(secure_cluster, tmp_path_factory):
    """Every command that must be refused, run concurrently (a refusal may take a client timeout):
    name -> (CompletedProcess-like result, elapsed seconds)."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from tests.helpers import ROOT, TELBUS

    c = secure_cluster
    other_ca = TestCA(tmp_path_factory.mktemp("other-ca"))
    login = jl(*SAMPLES["sec.login.events"])
    cases = {
        "produce wrong password": ("producer", ["produce", "sec.login.events"], {"password": WRONG}, login),
        "produce unknown user": ("producer", ["produce", "sec.login.events"],
                                 {"password": WRONG, "env": {"TELBUS_KAFKA_SASL_USERNAME": "mallory"}}, login),
        "consume wrong password": ("reader", ["consume", "sec.login.events", "--from-beginning", "--max", "1",
                                              "--timeout", "5"], {"password": WRONG}, None),
        "topics wrong password": ("reader", ["topics", "list"], {"password": WRONG}, None),
        "topics other CA": ("reader", ["topics", "list"],
                            {"env": {"TELBUS_KAFKA_SSL_CA_LOCATION": str(other_ca.ca_file)}}, None),
    }

    def run(case):
        user, args, opts, stdin = case
        env = {**os.environ, **c.env(user, opts.get("password")), **opts.get("env", {})}
        t0 = time.monotonic()
        res = subprocess.run([TELBUS, *args], input=stdin, capture_output=True, text=True, timeout=200, env=env,
                             cwd=str(ROOT))
        return res, time.monotonic() - t0

    d = tmp_path_factory.mktemp("refused-daemons")
    daemons = {
        "worker": (["worker", "--loglevel", "info"],
                   {**c.env("worker", WRONG), "TELBUS_WORKER_WEB_PORT": str(free_port()),
                    "TELBUS_PROCESS_NAME": "worker-refused", "TELBUS_DATA_DIR": str(d / "w")}),
        "sink": (["sink"], {**c.env("sink", WRONG), "TELBUS_PROCESS_NAME": "sink-refused",
                            "TELBUS_DATA_DIR": str(d / "s"), "TELBUS_PII_KEY": PII_KEY}),
    }
    with ThreadPoolExecutor(len(cases) + len(daemons)) as pool:
        futures = {name: pool.submit(run, case) for name, case in cases.items()}
        dfutures = {n: pool.submit(_run_for, argv, env, 30, d / f"{n}.log") for n, (argv, env) in daemons.items()}
        out = {name: f.result() for name, f in futures.items()}
        out["daemons"] = {n: f.result() for n, f in dfutures.items()}
        return out


@pytest.mark.parametrize("name", ["produce wrong password", "produce unknown user", "consume wrong password",
                                  "topics wrong password"])
def test_wrong_credentials_are_refused_with_a_clear_error(refusals, secure_cluster, name):
    res, elapsed = refusals[name]
    assert res.returncode != 0, name
    assert "Authentication failed" in res.stderr and "invalid credentials" in res.stderr, res.stderr[-2000:]
    assert elapsed < 120, f"{name} took {elapsed:.0f}s"
    assert_no_secret(res.stdout + res.stderr, secure_cluster, f"{name} output")
    if name.startswith("produce"):
        assert "Traceback" not in res.stderr
        assert produce_summary(res.stderr)["published"] == 0


def test_wrong_password_fails_fast_with_one_telbus_message(refusals):
    res, elapsed = refusals["produce wrong password"]
    assert elapsed < 20
    assert any(line.startswith("telbus") and "authentication" in line.lower() for line in res.stderr.splitlines())


@pytest.mark.parametrize("name", ["consume wrong password", "topics wrong password", "topics other CA"])
def test_refused_commands_print_no_traceback(refusals, name):
    res, _ = refusals[name]
    assert "Traceback" not in res.stderr


def test_tls_is_verified_against_the_configured_ca(refusals):
    res, _ = refusals["topics other CA"]
    assert res.returncode != 0
    assert "certificate verify failed" in res.stderr, res.stderr[-2000:]


def test_plaintext_client_gets_nothing(secure_cluster):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    a = AdminClient({"bootstrap.servers": secure_cluster.bootstrap, "socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        a.list_topics(timeout=5)


# ----------------------------------------------------------------------------------------
# ACLs
# ----------------------------------------------------------------------------------------

def test_producer_cannot_write_an_output_topic(secure_cluster):
    rated = {"event_type": "RatedCdr", "cdr_id": "C-forged", "subscriber_id": "S-forged", "service": "VOICE",
             "direction": "MO", "zone": "DOMESTIC", "billed_units": 60, "free_units": 0, "amount_li": 0,
             "plan_id": "P", "plan_version": 1, "billing_period": "202611", "balance_after_li": 10**9,
             "status": "RATED", "reject_reason": None, "rated_at": T}
    started = time.monotonic()
    res = as_user(secure_cluster, "producer", "produce", "bss.cdr.rated", input=jl(rated), timeout=150)
    assert res.returncode == 1
    assert "Topic authorization failed" in res.stderr, res.stderr
    assert time.monotonic() - started < 60
    assert produce_summary(res.stderr)["published"] == 0
    assert not [r for r in read_all(secure_cluster, "bss.cdr.rated") if r[2] == b"S-forged"]


@pytest.mark.parametrize("user,topic", [("producer", "bss.subscription.state"), ("worker", "net.cdr.raw"),
                                        ("sink", "bss.cdr.rated")])
def test_principals_write_only_what_they_own(secure_cluster, user, topic):
    event = SAMPLES[topic][0]
    res = as_user(secure_cluster, user, "produce", topic, input=jl(event), timeout=150)
    assert res.returncode == 1 and "Topic authorization failed" in res.stderr, (user, topic, res.stderr)


def test_principal_without_any_write_permission_is_refused(secure_cluster):
    """``reader`` may write nothing at all: the idempotent producer cannot even get a producer id."""
    res = as_user(secure_cluster, "reader", "produce", "sec.login.events",
                  input=jl(SAMPLES["sec.login.events"][0]), timeout=150)
    assert res.returncode != 0
    assert "authorization failed" in res.stderr.lower(), res.stderr[-2000:]


def test_principal_without_any_write_permission_gets_no_traceback(secure_cluster):
    res = as_user(secure_cluster, "reader", "produce", "sec.login.events",
                  input=jl(SAMPLES["sec.login.events"][0]), timeout=150)
    assert res.returncode != 0 and "Traceback" not in res.stderr


def test_producer_cannot_create_topics_or_read(secure_cluster):
    from confluent_kafka import Consumer, TopicPartition

    res = as_user(secure_cluster, "producer", "topics", "apply", timeout=150)
    assert res.returncode != 0
    c = Consumer({**secure_cluster.client("producer"), "group.id": "telbus-anon", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("net.cdr.raw", p, 0) for p in range(12)])
        deadline = time.monotonic() + 20
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is not None, "the producer principal read a record"
                err = m.error()
        assert err is not None and "authorization" in err.str().lower(), err
    finally:
        c.close()


# ----------------------------------------------------------------------------------------
# worker and sink over SASL_SSL
# ----------------------------------------------------------------------------------------

def test_worker_and_sink_process_over_sasl_ssl(secure_cluster, stack):
    uid = secrets.token_hex(4)
    sc = scenario(uid)
    for topic in ("bss.tariff.plans", "bss.subscriber.events"):
        res = as_user(secure_cluster, "producer", "produce", topic, input=jl(*sc[topic]))
        assert res.returncode == 0, res.stderr
    sub = f"S-{uid}".encode()

    # subscription sync published the state
    state = wait_until(lambda: [r for r in read_all(secure_cluster, "bss.subscription.state") if r[2] == sub],
                       120, 1.0, "SubscriptionState over SASL_SSL")
    assert codec.decode(state[0][3])["version"] == 1
    # rating (librdkafka) has seen the plan and the subscriber before the CDR is sent
    time.sleep(2)
    res = as_user(secure_cluster, "producer", "produce", "net.cdr.raw", input=jl(*sc["net.cdr.raw"]))
    assert res.returncode == 0, res.stderr
    rated = wait_until(lambda: [r for r in read_all(secure_cluster, "bss.cdr.rated") if r[2] == sub],
                       120, 1.0, "RatedCdr over SASL_SSL")
    rc = codec.decode(rated[0][3])
    assert (rc["status"], rc["amount_li"], rc["plan_id"]) == ("RATED", 150, f"P-{uid}")

    # the sink stored the CDR and the rated CDR; its endpoint wants the token
    url = stack["sink"].endpoints()["query"]

    def stored():
        st, body = http(f"{url}/query", {"sql": f"SELECT count() FROM bss_cdr_rated WHERE cdr_id = 'C-{uid}'"},
                        token=QUERY_TOKEN)
        return st == 200 and body["rows"] == [[1]]

    wait_until(stored, 120, 1.0, "rated CDR in the store")
    st, body = http(f"{url}/query", {"sql": "SELECT 1"})
    assert st == 401 and body["kind"] == "unauthorized"
    st, _ = http(f"{url}/query", {"sql": "SELECT 1"}, token="not-the-token")
    assert st == 401
    # the CLI finds the endpoint and sends the token from TELBUS_QUERY_TOKEN
    res = cli("query", f"SELECT count() FROM net_cdr_raw WHERE cdr_id = 'C-{uid}'", "--format", "json",
              env={"TELBUS_QUERY_TOKEN": QUERY_TOKEN})
    assert res.returncode == 0, res.stderr
    assert list(json.loads(res.stdout)[0].values()) == [1]


FORBIDDEN = [
    "INSERT INTO net_cdr_raw SELECT * FROM net_cdr_raw",
    "ALTER TABLE net_cdr_raw DELETE WHERE 1",
    "ALTER TABLE net_cdr_raw DROP COLUMN province",
    "DROP TABLE net_cdr_raw",
    "drop table if exists bss_cdr_rated",
    "TRUNCATE TABLE net_cdr_raw",
    "SELECT 1; DROP TABLE net_cdr_raw",
    "/* harmless */ DROP TABLE net_cdr_raw",
    "(DROP TABLE net_cdr_raw)",
    "WITH x AS (SELECT 1) INSERT INTO net_cdr_raw SELECT * FROM net_cdr_raw",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT 1 INTO OUTFILE '/tmp/telbus-owned'",
    "SET readonly = 0",
    "CREATE TABLE owned (x UInt8) ENGINE = Memory",
    "OPTIMIZE TABLE net_cdr_raw FINAL",
    "SYSTEM DROP MARK CACHE",
]


def test_query_endpoint_refuses_writes_and_ddl(secure_cluster, stack):
    url = stack["sink"].endpoints()["query"]
    st, before = http(f"{url}/query", {"sql": "SELECT count() FROM net_cdr_raw"}, token=QUERY_TOKEN)
    assert st == 200
    for sql in FORBIDDEN:
        st, body = http(f"{url}/query", {"sql": sql}, token=QUERY_TOKEN)
        assert st == 400 and body["kind"] in ("forbidden", "bad_sql"), (sql, st, body)
        assert body["error"], sql
    for sql in ("INSERT INTO net_cdr_raw SELECT * FROM net_cdr_raw", "DROP TABLE net_cdr_raw",
                "ALTER TABLE net_cdr_raw DELETE WHERE 1"):
        res = cli("query", sql, env={"TELBUS_QUERY_TOKEN": QUERY_TOKEN})
        assert res.returncode == 2 and "not allowed" in res.stderr and "Traceback" not in res.stderr, res.stderr
    st, after = http(f"{url}/query", {"sql": "SELECT count() FROM net_cdr_raw"}, token=QUERY_TOKEN)
    assert st == 200 and after["rows"][0][0] >= before["rows"][0][0]
    st, tables = http(f"{url}/query", {"sql": "SHOW TABLES"}, token=QUERY_TOKEN)
    names = {r[0] for r in tables["rows"]}
    assert {"net_cdr_raw", "bss_cdr_rated"} <= names and "owned" not in names


def test_http_endpoints_bind_to_loopback_by_default(secure_cluster, stack):
    res = cli("status", env=secure_cluster.env("admin"))
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    urls = [u for p in status["processes"] for u in p["endpoints"].values() if str(u).startswith("http")]
    assert len(urls) >= 4, status          # worker: metrics, views; sink: metrics, query
    for u in urls:
        assert u.startswith("http://127.0.0.1:"), u


@pytest.mark.parametrize("name", [
    "worker", "sink"])
def test_processes_listen_on_loopback_only(stack, name):
    """What the processes actually bind, not only the URLs they advertise."""
    import ipaddress

    addrs = listening_addresses(stack[name].pid)
    assert addrs, f"{name} listens on nothing?"
    public = [(a, p) for a, p in addrs if not ipaddress.ip_address(a).is_loopback]
    assert not public, f"{name} listens on {public} (all: {sorted(addrs)})"


def test_query_endpoint_refuses_a_non_loopback_bind_without_token(secure_cluster, tmp_path):
    """The guard runs before anything is bound (nothing listens on a public address here)."""
    import subprocess
    import sys

    code = ("from sinks.queryserver import QueryServer\n"
            "try:\n"
            "    QueryServer('chdb:///nonexistent', host='0.0.0.0', token='')\n"
            "except RuntimeError as e:\n"
            "    print('refused:', e)\n"
            "else:\n"
            "    print('accepted')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "TELBUS_DATA_DIR": str(tmp_path)})
    assert res.stdout.startswith("refused:") and "TELBUS_QUERY_TOKEN" in res.stdout, res.stdout + res.stderr


def test_no_secret_in_logs_status_or_metrics(secure_cluster, stack, refusals):
    c = secure_cluster
    # the failed logins too: what the operator sees of them must not carry the attempted password
    outputs = {f"{name} (stdout+stderr)": res.stdout + res.stderr + "." for name, (res, _) in refusals.items()
               if name != "daemons"}
    outputs.update({f"{name} log (wrong password)": log for name, (_, log, _) in refusals["daemons"].items()})
    for user in ("admin", "producer", "worker", "sink"):
        res = cli("status", env=c.env(user))
        assert res.returncode == 0
        outputs[f"telbus status ({user})"] = res.stdout + res.stderr
        settings = json.loads(res.stdout)["kafka_client_settings"]
        assert settings["sasl.password"] == "***" and settings["sasl.username"] == user
    for name, proc in stack.items():
        for kind, url in proc.endpoints().items():
            if kind == "metrics":
                st, body = http(url)
                assert st == 200
                outputs[f"{name} metrics"] = body
        outputs[f"{name} log"] = proc.log_path.read_text(errors="replace")
    st, body = http(stack["worker"].endpoints()["views"] + "/ehome/no-such-account")
    outputs["views 404"] = json.dumps(body)
    outputs["broker log"] = c.broker.log.read_text(errors="replace")
    for where, text in outputs.items():
        assert text, where
        assert_no_secret(text, c, where)


def _run_for(argv, env, seconds: float, log_path):
    """Start ``telbus ARGV`` (own session), wait until it exits or ``seconds`` pass, stop it by pid.
    Returns (returncode or None if it was still running, log text, elapsed)."""
    import os
    import signal
    import subprocess

    from tests.helpers import ROOT, TELBUS

    with open(log_path, "wb") as log:
        p = subprocess.Popen([TELBUS, *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **env}, cwd=str(ROOT), start_new_session=True)
        t0 = time.monotonic()
        try:
            rc = p.wait(seconds)
        except subprocess.TimeoutExpired:
            rc = None
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(30)
    return rc, log_path.read_text(errors="replace"), time.monotonic() - t0


@pytest.fixture(scope="module")
def refused_daemons(refusals):
    """Worker and sink started with a wrong password (run within ``refusals``, concurrently)."""
    return refusals["daemons"]


def test_worker_with_a_wrong_password_says_why_and_never_gets_ready(secure_cluster, refused_daemons):
    rc, log, _ = refused_daemons["worker"]
    assert rc != 0
    assert "SaslAuthenticationFailed" in log or "Authentication failed" in log, log[-3000:]
    assert "telbus worker ready" not in log
    assert_no_secret(log, secure_cluster, "worker log (wrong password)")


def test_worker_with_a_wrong_password_exits(refused_daemons):
    rc, _, elapsed = refused_daemons["worker"]
    assert rc not in (None, 0), f"worker still running after {elapsed:.0f}s or exited 0"


def test_sink_with_a_wrong_password_says_why_and_never_gets_ready(secure_cluster, refused_daemons):
    rc, log, _ = refused_daemons["sink"]
    assert rc != 0
    assert "Authentication failed" in log, log[-3000:]
    assert_no_secret(log, secure_cluster, "sink log (wrong password)")


def test_sink_with_a_wrong_password_exits(refused_daemons):
    rc, _, _ = refused_daemons["sink"]
    assert rc is not None and rc != 0
