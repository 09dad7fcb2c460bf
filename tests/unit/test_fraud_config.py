import dataclasses

import pytest

from processors.fraud.config import DEFAULT_IRSF_PREFIXES, FraudConfig, env_name


def test_defaults_are_the_contract_values():
    c = FraudConfig()
    assert (c.brute_force_failures, c.brute_force_window_ms) == (5, 60_000)
    assert (c.stuffing_accounts, c.stuffing_window_ms) == (20, 60_000)
    assert c.travel_window_ms == 600_000
    assert (c.irsf_calls, c.irsf_seconds, c.irsf_window_ms) == (3, 1800, 3_600_000)
    assert c.irsf_prefixes == ("00881", "00882", "00883", "00870", "00979", "00808")
    assert (c.simbox_calls, c.simbox_distinct_numbers, c.simbox_window_ms) == (50, 40, 3_600_000)
    assert (c.new_subscriber_spend_li, c.new_subscriber_window_ms) == (100_000, 86_400_000)
    assert c.suppression_ms == 600_000
    assert c.allowed_lateness_ms == 30_000
    assert c.merge_skew_ms == 3_600_000


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FraudConfig().irsf_calls = 4  # type: ignore[misc]


def test_from_env_empty_gives_defaults():
    assert FraudConfig.from_env({}) == FraudConfig()
    assert FraudConfig.from_env({"TELBUS_FRAUD_IRSF_CALLS": "  "}) == FraudConfig()


def test_from_env_reads_every_variable():
    env = {
        "TELBUS_FRAUD_ALLOWED_LATENESS_S": "0",
        "TELBUS_FRAUD_MERGE_SKEW_S": "0",
        "TELBUS_FRAUD_SUPPRESSION_S": "300",
        "TELBUS_FRAUD_BRUTE_FORCE_FAILURES": "10",
        "TELBUS_FRAUD_BRUTE_FORCE_WINDOW_S": "120",
        "TELBUS_FRAUD_STUFFING_ACCOUNTS": "30",
        "TELBUS_FRAUD_STUFFING_WINDOW_S": "90",
        "TELBUS_FRAUD_TRAVEL_WINDOW_S": "1200",
        "TELBUS_FRAUD_IRSF_CALLS": "4",
        "TELBUS_FRAUD_IRSF_SECONDS": "900",
        "TELBUS_FRAUD_IRSF_WINDOW_S": "7200",
        "TELBUS_FRAUD_IRSF_PREFIXES": "00881, 00999",
        "TELBUS_FRAUD_SIMBOX_CALLS": "100",
        "TELBUS_FRAUD_SIMBOX_DISTINCT_NUMBERS": "80",
        "TELBUS_FRAUD_SIMBOX_WINDOW_S": "1800",
        "TELBUS_FRAUD_NEW_SUBSCRIBER_SPEND_LI": "200_000",
        "TELBUS_FRAUD_NEW_SUBSCRIBER_WINDOW_S": "43200",
        "TELBUS_FRAUD_MAX_WINDOW_EVENTS": "500",
    }
    c = FraudConfig.from_env(env)
    assert c.allowed_lateness_ms == 0
    assert c.merge_skew_ms == 0
    assert c.suppression_ms == 300_000
    assert c.brute_force_failures == 10 and c.brute_force_window_ms == 120_000
    assert c.stuffing_accounts == 30 and c.stuffing_window_ms == 90_000
    assert c.travel_window_ms == 1_200_000
    assert (c.irsf_calls, c.irsf_seconds, c.irsf_window_ms) == (4, 900, 7_200_000)
    assert c.irsf_prefixes == ("00881", "00999")
    assert (c.simbox_calls, c.simbox_distinct_numbers, c.simbox_window_ms) == (100, 80, 1_800_000)
    assert c.new_subscriber_spend_li == 200_000
    assert c.new_subscriber_window_ms == 43_200_000
    assert c.max_window_events == 500
    # every field has its variable, and describe() round-trips
    assert set(c.describe()) == {env_name(f.name) for f in dataclasses.fields(FraudConfig)}
    assert FraudConfig.from_env(c.describe()) == c


@pytest.mark.parametrize(
    "var,value",
    [
        ("TELBUS_FRAUD_BRUTE_FORCE_FAILURES", "five"),
        ("TELBUS_FRAUD_BRUTE_FORCE_FAILURES", "0"),
        ("TELBUS_FRAUD_BRUTE_FORCE_WINDOW_S", "-60"),
        ("TELBUS_FRAUD_BRUTE_FORCE_WINDOW_S", "1.5"),
        ("TELBUS_FRAUD_STUFFING_ACCOUNTS", "0"),
        ("TELBUS_FRAUD_IRSF_SECONDS", "abc"),
        ("TELBUS_FRAUD_SUPPRESSION_S", "0"),
        ("TELBUS_FRAUD_ALLOWED_LATENESS_S", "-1"),
        ("TELBUS_FRAUD_MERGE_SKEW_S", "1h"),
        ("TELBUS_FRAUD_IRSF_PREFIXES", "00881,,00882"),
        ("TELBUS_FRAUD_IRSF_PREFIXES", "00881,+882"),
        ("TELBUS_FRAUD_SIMBOX_DISTINCT_NUMBERS", "51"),
        ("TELBUS_FRAUD_NEW_SUBSCRIBER_SPEND_LI", "100000.0"),
        ("TELBUS_FRAUD_MAX_WINDOW_EVENTS", "0"),
    ],
)
def test_bad_value_names_the_variable(var, value):
    with pytest.raises(ValueError) as err:
        FraudConfig.from_env({var: value})
    assert str(err.value).startswith(var + ":")


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match="TELBUS_FRAUD_IRSF_CALLS"):
        FraudConfig(irsf_calls=0)
    with pytest.raises(ValueError, match="TELBUS_FRAUD_IRSF_CALLS"):
        FraudConfig(irsf_calls=True)
    with pytest.raises(ValueError, match="TELBUS_FRAUD_IRSF_PREFIXES"):
        FraudConfig(irsf_prefixes=())
    assert FraudConfig(irsf_prefixes=DEFAULT_IRSF_PREFIXES).irsf_prefixes == DEFAULT_IRSF_PREFIXES
