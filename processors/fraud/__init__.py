"""Fraud detection over logins and CDRs (CONTRACT §4 "Fraud detection").

``config`` holds the validated thresholds, ``rules`` the pure event-time detectors;
``agent`` (Faust shell) wires them to topics and changelog-backed tables.
"""

from .config import FraudConfig
from .rules import ALL_RULES, DETECTORS, InvalidEvent, RuleResult

__all__ = ["ALL_RULES", "DETECTORS", "FraudConfig", "InvalidEvent", "RuleResult"]
