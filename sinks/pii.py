"""Keyed hashing of personal data (``real_name``, ``id_number``) before it reaches the store.

Value stored: ``lower(hex(HMAC-SHA256(key, utf8(value))))`` — 64 hex characters in the
column ``<field>_hmac``. Without the key the hash cannot be reversed by guessing (ID
numbers have little entropy, which is why a plain SHA-256 would not do).

Key: ``TELBUS_PII_KEY`` (any string; use >= 32 random bytes, hex or base64 as text).
When it is unset the sink creates a random key once in ``<data dir>/secrets/pii.key``
(mode 0600) so hashes stay stable across restarts of a local stack; a deployment sets
``TELBUS_PII_KEY`` from its secret store. Changing the key changes every future hash:
rows written before and after no longer join (rotate by re-hashing from the topic).

How an authorized user (who holds the key) finds a person's rows, in SQL:

    SELECT * FROM bss_subscriber_events FINAL
    WHERE id_number_hmac = lower(hex(HMAC('SHA256', '<id number>', '<key>')))

or joins a list of clear ID numbers the same way, or computes the hashes in Python with
:func:`hash_value` and joins on ``id_number_hmac``. The key never goes into the store.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ENV_KEY = "TELBUS_PII_KEY"


def _data_dir() -> Path:
    try:
        from telbus import config
        return config.data_dir()
    except Exception:  # pragma: no cover - foundation absent
        return Path(os.environ.get("TELBUS_DATA_DIR") or Path(__file__).resolve().parents[1] / ".data")


def load_key(data_dir: Path | None = None) -> bytes:
    """The PII key: ``TELBUS_PII_KEY``, else a per-installation key file created once."""
    value = os.environ.get(ENV_KEY)
    if value:
        return value.encode("utf-8")
    path = (data_dir or _data_dir()) / "secrets" / "pii.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
        finally:
            os.close(fd)
    return path.read_text().strip().encode("utf-8")


def hash_value(value: str | None, key: bytes) -> str | None:
    if value is None:
        return None
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


class Hasher:
    """Callable bound to one key (the row builders call it per PII value)."""

    def __init__(self, key: bytes | None = None):
        self.key = key if key is not None else load_key()

    def __call__(self, value: str | None) -> str | None:
        if value is None:
            return None
        return hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()
