"""Fixtures of the security tests: a SASL_SSL/SCRAM/ACL broker of their own on loopback.

The session's plaintext broker is never used here: while a security module runs, the
``TELBUS_KAFKA_*`` settings of the session are removed from this process's environment,
every telbus process gets the TELBUS_* settings of the principal it runs as, and
``TELBUS_DATA_DIR`` points at the module's own directory. Everything is restored and the
broker stopped (by its pid) when the module ends.
"""
from __future__ import annotations

import os

import pytest

from tests.helpers import cli
from tests.security.cluster import SecureCluster


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("secure")
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith("TELBUS_KAFKA_"):
            mp.delenv(k)
    data = base / "data"
    data.mkdir()
    mp.setenv("TELBUS_DATA_DIR", str(data))
    cluster = SecureCluster(base)
    try:
        cluster.start()
        cluster.apply_acls()
        cluster.topics_apply = cli("topics", "apply", env=cluster.env("admin"), timeout=120)
        assert cluster.topics_apply.returncode == 0, cluster.topics_apply.stderr
        yield cluster
    finally:
        cluster.stop()
        mp.undo()


def as_user(cluster: SecureCluster, user: str, *args, password: str | None = None, input: str | None = None,
            timeout: float = 120, env: dict | None = None):
    """``telbus ARGS`` as ``user`` (TELBUS_KAFKA_* settings only, as a deployment would)."""
    return cli(*args, input=input, timeout=timeout, env={**cluster.env(user, password), **(env or {})})
