"""Client-side security settings without a broker: the Faust/aiokafka credentials built from
TELBUS_KAFKA_*, a mutual-TLS handshake with the generated certificates, and redaction."""
from __future__ import annotations

import socket
import ssl
import threading

import pytest

from telbus import config
from telbus.tls import TestCA

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "tls")


@pytest.fixture
def kafka_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("TELBUS_KAFKA_") and k != "TELBUS_KAFKA_BOOTSTRAP":
            monkeypatch.delenv(k)

    def set_(**kw):
        for k, v in kw.items():
            monkeypatch.setenv(f"TELBUS_KAFKA_{k.upper()}", v)

    return set_


def creds():
    from processors.app import broker_credentials

    return broker_credentials()


def test_plaintext_needs_no_credentials(kafka_env):
    assert creds() is None


def test_sasl_ssl_scram(kafka_env, ca):
    import faust
    from faust.types.auth import AuthProtocol, SASLMechanism

    kafka_env(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="worker",
              sasl_password="s3cret-value", ssl_ca_location=str(ca.ca_file))
    c = creds()
    assert isinstance(c, faust.SASLCredentials)
    assert c.protocol == AuthProtocol.SASL_SSL and c.mechanism == SASLMechanism.SCRAM_SHA_512
    assert (c.username, c.password) == ("worker", "s3cret-value")
    assert c.ssl_context.verify_mode == ssl.CERT_REQUIRED and c.ssl_context.check_hostname
    assert any(dict(x[0] for x in cert["subject"]).get("commonName") == "telbus test CA"
               for cert in c.ssl_context.get_ca_certs())
    assert "s3cret-value" not in repr(c)


def test_librdkafka_mechanisms_alias_and_sasl_plaintext(kafka_env):
    from faust.types.auth import AuthProtocol, SASLMechanism

    kafka_env(security_protocol="sasl_plaintext", sasl_mechanisms="SCRAM-SHA-256", sasl_username="u",
              sasl_password="p")
    c = creds()
    assert c.protocol == AuthProtocol.SASL_PLAINTEXT and c.mechanism == SASLMechanism.SCRAM_SHA_256
    assert c.ssl_context is None


def test_hostname_verification_can_be_turned_off_not_the_chain(kafka_env, ca):
    kafka_env(security_protocol="SSL", ssl_ca_location=str(ca.ca_file), ssl_endpoint_identification_algorithm="NONE")
    c = creds()
    assert not c.context.check_hostname and c.context.verify_mode == ssl.CERT_REQUIRED


def _tls_server(ca, server_cert, require_client_cert: bool):
    """A one-connection TLS server on loopback; returns (port, thread, result dict)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca_file))
    ctx.load_cert_chain(str(server_cert.cert), str(server_cert.key))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    result = {}

    def serve():
        try:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                result["peer_cn"] = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
                tls.sendall(b"ok")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            result["error"] = repr(exc)
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, result


def test_mutual_tls_client_certificate_from_telbus_settings(kafka_env, ca):
    server = ca.issue("telbus-broker")
    client = ca.issue("telbus-worker", hosts=(), server=False, key_password="key-pass")
    kafka_env(security_protocol="SSL", ssl_ca_location=str(ca.ca_file),
              ssl_certificate_location=str(client.cert), ssl_key_location=str(client.key),
              ssl_key_password="key-pass")
    c = creds()
    port, t, result = _tls_server(ca, server, require_client_cert=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with c.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
    t.join(10)
    assert result == {"peer_cn": "telbus-worker"}


def test_a_server_certificate_from_another_ca_is_refused(kafka_env, ca, tmp_path):
    other = TestCA(tmp_path / "other")
    kafka_env(security_protocol="SSL", ssl_ca_location=str(ca.ca_file))
    c = creds()
    port, t, _ = _tls_server(other, other.issue("impostor"), require_client_cert=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.context.wrap_socket(raw, server_hostname="127.0.0.1")
    t.join(10)


def test_server_certificate_for_another_host_is_refused(kafka_env, ca):
    kafka_env(security_protocol="SSL", ssl_ca_location=str(ca.ca_file))
    c = creds()
    port, t, _ = _tls_server(ca, ca.issue("elsewhere", hosts=("kafka.example.invalid",)), require_client_cert=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.context.wrap_socket(raw, server_hostname="127.0.0.1")
    t.join(10)


@pytest.mark.parametrize("key", ["sasl.password", "ssl.key.password", "ssl.keystore.password",
                                 "sasl.oauthbearer.client.secret", "sasl.jaas.config", "ssl.truststore.password"])
def test_redact_hides_secret_settings(key):
    shown = config.redact({key: "the-secret", "sasl.username": "worker", "security.protocol": "SASL_SSL"})
    assert shown[key] == "***"
    assert shown["sasl.username"] == "worker" and shown["security.protocol"] == "SASL_SSL"


def test_redact_hides_an_inline_private_key():
    assert config.redact({"ssl.key.pem": "-----BEGIN PRIVATE KEY-----..."})["ssl.key.pem"] == "***"


def test_private_keys_are_written_owner_only(ca):
    import os
    import stat

    files = ca.issue("telbus-x")
    for path in (files.key, files.bundle):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
