"""Settings from ``TELBUS_*`` environment variables.

One place reads the environment so every process (CLI, worker, sink, tests) agrees on
where the broker, the store and the data directory are. Kafka client settings pass
through: ``TELBUS_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes ``security.protocol``, so a
deployment can add SASL/TLS without code changes.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

# TELBUS_KAFKA_* names that are telbus settings, not client pass-through.
_NOT_PASSTHROUGH = {"TELBUS_KAFKA_BOOTSTRAP"}

#: Pass-through settings whose values must never be printed (status, logs).
SECRET_KEYS = ("password", "secret", "token", "key.password", "sasl.jaas", "key.pem", "oauthbearer")


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def data_dir() -> Path:
    """Where the local broker, worker state, store and pidfiles live (git-ignored)."""
    return Path(env("TELBUS_DATA_DIR", str(ROOT / ".data"))).resolve()


def run_dir() -> Path:
    d = data_dir() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def schemas_dir() -> Path:
    return Path(env("TELBUS_SCHEMAS_DIR", str(ROOT / "schemas")))


def bootstrap() -> str:
    """Bootstrap servers: an existing cluster if configured, else the local broker.

    The local broker writes the address it listens on into ``run/bootstrap`` so that
    every process started from the same checkout finds it without configuration.
    """
    configured = env("TELBUS_KAFKA_BOOTSTRAP")
    if configured:
        return configured
    f = data_dir() / "run" / "bootstrap"
    if f.exists():
        return f.read_text().strip()
    return DEFAULT_BOOTSTRAP


def kafka_passthrough() -> dict[str, str]:
    """librdkafka/Java-style client settings from ``TELBUS_KAFKA_<NAME>`` variables."""
    out = {}
    for k, v in os.environ.items():
        if k.startswith("TELBUS_KAFKA_") and k not in _NOT_PASSTHROUGH and v != "":
            out[k[len("TELBUS_KAFKA_"):].lower().replace("_", ".")] = v
    return out


def redact(settings: dict[str, str]) -> dict[str, str]:
    """Copy of client settings safe to print: secret values replaced."""
    return {k: ("***" if any(s in k for s in SECRET_KEYS) else v) for k, v in settings.items()}


def schema_registry_url() -> str | None:
    return env("TELBUS_SCHEMA_REGISTRY_URL")


def clickhouse_dsn() -> str:
    return env("TELBUS_CLICKHOUSE_DSN", f"chdb://{data_dir() / 'clickhouse'}")


def http_host() -> str:
    """Bind address of every HTTP endpoint (views, query, metrics): loopback by default."""
    return env("TELBUS_HTTP_HOST", "127.0.0.1")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_token() -> str | None:
    """Bearer token the views and metrics endpoints require when bound off loopback.

    Refusing to start without one is deliberate: an endpoint reachable from the network
    with no credential would hand subscriber data to anyone who asks.
    """
    token = env("TELBUS_HTTP_TOKEN")
    host = http_host()
    if not token and not is_loopback(host):
        raise ValueError(f"TELBUS_HTTP_HOST={host} is not loopback: set TELBUS_HTTP_TOKEN "
                         "(clients send 'Authorization: Bearer <token>')")
    return token


def bearer_ok(header: str | None, token: str | None) -> bool:
    """Is an ``Authorization`` header value acceptable for ``token`` (None: no token needed)?"""
    import hmac

    if not token:
        return True
    return bool(header) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
