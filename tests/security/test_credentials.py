"""Client-side security settings without a broker: redaction of secret settings, and the
generated certificates' private keys readable by their owner only."""
from __future__ import annotations

import pytest

from telbus import config
from telbus.tls import TestCA

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "tls")


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
