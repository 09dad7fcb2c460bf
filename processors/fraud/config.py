"""Fraud detection configuration (CONTRACT §4 "Fraud detection").

Every threshold, window, the high-risk prefix list, the alert suppression time and the
allowed lateness are configuration. Defaults are the contract's values. Values are read
from environment variables and validated when the processor starts: a bad value raises
``ValueError`` whose message starts with the variable's name.

Environment variables (durations in whole seconds):

============================================  =========  ====================================
variable                                      default    meaning
============================================  =========  ====================================
TELBUS_FRAUD_ALLOWED_LATENESS_S               30         events older than (key watermark -
                                                         this) are counted as late, ignored
TELBUS_FRAUD_MERGE_SKEW_S                     3600       how far one input may trail another
                                                         for the same key and still count
                                                         (stuffing repartition; creation vs
                                                         rated stream); extends retention
TELBUS_FRAUD_SUPPRESSION_S                    600        one alert per (rule, subject) per
                                                         this much event time
TELBUS_FRAUD_BRUTE_FORCE_FAILURES             5          BAD_PASSWORD logins per account ...
TELBUS_FRAUD_BRUTE_FORCE_WINDOW_S             60         ... within this window
TELBUS_FRAUD_STUFFING_ACCOUNTS                20         distinct accounts with a failed login
                                                         from one source_ip ...
TELBUS_FRAUD_STUFFING_WINDOW_S                60         ... within this window
TELBUS_FRAUD_TRAVEL_WINDOW_S                  600        two SUCCESS logins of one account
                                                         from different provinces within this
TELBUS_FRAUD_IRSF_CALLS                       3          MO voice calls to high-risk prefixes
TELBUS_FRAUD_IRSF_SECONDS                     1800       ... or this many seconds in total ...
TELBUS_FRAUD_IRSF_WINDOW_S                    3600       ... per subscriber within this window
TELBUS_FRAUD_IRSF_PREFIXES                    00881,00882,00883,00870,00979,00808
                                                         comma-separated called-number prefixes
TELBUS_FRAUD_SIMBOX_CALLS                     50         MO voice calls ...
TELBUS_FRAUD_SIMBOX_DISTINCT_NUMBERS          40         ... to at least this many numbers ...
TELBUS_FRAUD_SIMBOX_WINDOW_S                  3600       ... within this window, no MT call
TELBUS_FRAUD_NEW_SUBSCRIBER_SPEND_LI          100000     rated spend (li) of a new subscriber
TELBUS_FRAUD_NEW_SUBSCRIBER_WINDOW_S          86400      ... within this time of creation
TELBUS_FRAUD_MAX_WINDOW_EVENTS                10000      hard cap on events kept per key and
                                                         rule (oldest dropped beyond it)
============================================  =========  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping

ENV_PREFIX = "TELBUS_FRAUD_"

DEFAULT_IRSF_PREFIXES: tuple[str, ...] = ("00881", "00882", "00883", "00870", "00979", "00808")


@dataclass(frozen=True)
class FraudConfig:
    allowed_lateness_s: int = 30
    merge_skew_s: int = 3600
    suppression_s: int = 600
    brute_force_failures: int = 5
    brute_force_window_s: int = 60
    stuffing_accounts: int = 20
    stuffing_window_s: int = 60
    travel_window_s: int = 600
    irsf_calls: int = 3
    irsf_seconds: int = 1800
    irsf_window_s: int = 3600
    irsf_prefixes: tuple[str, ...] = DEFAULT_IRSF_PREFIXES
    simbox_calls: int = 50
    simbox_distinct_numbers: int = 40
    simbox_window_s: int = 3600
    new_subscriber_spend_li: int = 100_000
    new_subscriber_window_s: int = 86_400
    max_window_events: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "irsf_prefixes":
                _check_prefixes(value)
                continue
            minimum = _MINIMUM.get(f.name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(
                    f"{env_name(f.name)}: must be an integer >= {minimum}, got {value!r}"
                )
        if self.simbox_distinct_numbers > self.simbox_calls:
            raise ValueError(
                f"{env_name('simbox_distinct_numbers')}: must be <= "
                f"{env_name('simbox_calls')} ({self.simbox_calls}), "
                f"got {self.simbox_distinct_numbers}"
            )

    # --- durations in milliseconds (event times are int epoch ms) -------------------
    @property
    def allowed_lateness_ms(self) -> int:
        return self.allowed_lateness_s * 1000

    @property
    def merge_skew_ms(self) -> int:
        return self.merge_skew_s * 1000

    @property
    def suppression_ms(self) -> int:
        return self.suppression_s * 1000

    @property
    def brute_force_window_ms(self) -> int:
        return self.brute_force_window_s * 1000

    @property
    def stuffing_window_ms(self) -> int:
        return self.stuffing_window_s * 1000

    @property
    def travel_window_ms(self) -> int:
        return self.travel_window_s * 1000

    @property
    def irsf_window_ms(self) -> int:
        return self.irsf_window_s * 1000

    @property
    def simbox_window_ms(self) -> int:
        return self.simbox_window_s * 1000

    @property
    def new_subscriber_window_ms(self) -> int:
        return self.new_subscriber_window_s * 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FraudConfig":
        """Build the configuration from ``TELBUS_FRAUD_*`` variables (defaults otherwise).

        Raises ``ValueError`` naming the offending variable.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            if f.name == "irsf_prefixes":
                kwargs[f.name] = tuple(p.strip() for p in raw.split(","))
                continue
            text = raw.strip().replace("_", "")
            try:
                kwargs[f.name] = int(text, 10)
            except ValueError:
                raise ValueError(f"{name}: must be an integer, got {raw!r}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """Effective settings as ``{ENV_VAR: value}`` (for a startup log line)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[env_name(f.name)] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out


_MINIMUM = {"allowed_lateness_s": 0, "merge_skew_s": 0}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _check_prefixes(value: object) -> None:
    name = env_name("irsf_prefixes")
    if not isinstance(value, tuple) or not value:
        raise ValueError(f"{name}: must be a non-empty list of digit prefixes, got {value!r}")
    for p in value:
        if not isinstance(p, str) or not p.isdigit() or not p.isascii():
            raise ValueError(f"{name}: prefix {p!r} is not a string of digits")
