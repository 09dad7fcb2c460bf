"""JSON form: validation reasons, timestamps, and the round trip."""
import pytest

from telbus import jsonform
from telbus.jsonform import InvalidEvent, format_time, parse_time
from tests.samples import SAMPLES


def test_timestamps_with_offset_and_epoch_ms():
    assert parse_time("2026-11-20T10:00:00+08:00", "t") == 1795140000000
    assert parse_time("2026-11-20T02:00:00Z", "t") == 1795140000000
    assert parse_time("2026-11-20T02:00:00.123Z", "t") == 1795140000123
    assert parse_time(1795140000000, "t") == 1795140000000
    assert format_time(1795140000123) == "2026-11-20T02:00:00.123Z"
    with pytest.raises(InvalidEvent, match="no UTC offset"):
        parse_time("2026-11-20T10:00:00", "t")
    with pytest.raises(InvalidEvent, match="not an ISO-8601"):
        parse_time("yesterdayZ", "t")


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_json_round_trip_is_stable(topic):
    for obj in SAMPLES[topic]:
        once = jsonform.event_to_json(jsonform.event_from_json(obj))
        twice = jsonform.event_to_json(jsonform.event_from_json(once))
        assert once == twice


@pytest.mark.parametrize("mutate,reason", [
    (lambda o: o.pop("cdr_id"), "Cdr.cdr_id: missing required field"),
    (lambda o: o.update(duration_s="61"), "Cdr.duration_s: expected int, got '61'"),
    (lambda o: o.update(duration_s=2**40), "out of range for int"),
    (lambda o: o.update(service="FAX"), "Cdr.service: 'FAX' is not one of VOICE|SMS|DATA"),
    (lambda o: o.update(start_time="2026-11-20 10:00"), "Cdr.start_time"),
    (lambda o: o.update(colour="red"), "unknown field(s) colour"),
    (lambda o: o.update(event_type="Nope"), "unknown event_type 'Nope'"),
    (lambda o: o.update(called_number=None), None),
])
def test_validation_reasons(mutate, reason):
    obj = dict(SAMPLES["net.cdr.raw"][0])
    mutate(obj)
    if reason is None:
        assert jsonform.event_from_json(obj)["called_number"] is None
        return
    with pytest.raises(InvalidEvent) as exc:
        jsonform.event_from_json(obj)
    assert reason in str(exc.value)


def test_nested_array_records_are_checked():
    obj = dict(SAMPLES["bss.order.events"][0])
    obj["items"] = [{"action": "ADD", "product_id": "X", "product_type": "GAMES"}]
    with pytest.raises(InvalidEvent, match=r"OrderSubmitted.items\[0\].product_type"):
        jsonform.event_from_json(obj)


def test_wrong_topic_named_first():
    with pytest.raises(InvalidEvent, match="does not belong on this topic"):
        jsonform.event_from_json(SAMPLES["net.cdr.raw"][0], allowed=("Login",))
