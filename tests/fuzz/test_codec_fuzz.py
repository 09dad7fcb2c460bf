"""The codec and the JSON form under random and mutated input (no broker).

Properties:
* ``codec.decode`` of any bytes returns an event of a known type or raises ``DecodeError``
  (never another exception, never hangs); a decoded event re-encodes and decodes to itself;
* a single-object header with an unknown fingerprint is refused with a reason naming it;
* every JSON line ``telbus produce`` accepts can be encoded (a line that passes validation
  cannot crash the publisher), and round-trips through the codec unchanged; every line it
  refuses gets a one-line reason.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telbus import codec, jsonform
from telbus.cli import read_events
from tests.fuzz import strategies as S
from tests.fuzz.conftest import fuzz_settings

import topics

INPUTS = [t.name for t in topics.contract_topics("input")]
ALL = [t.name for t in topics.contract_topics()]

pytestmark = pytest.mark.timeout(300)


def _decode_or_reason(data):
    try:
        return codec.decode(data), None
    except codec.DecodeError as exc:
        return None, str(exc)


@fuzz_settings()
@given(topic=st.sampled_from(ALL), data=st.data())
def test_decode_returns_an_event_or_a_decode_error(topic, data):
    value = data.draw(S.values(topic))
    event, reason = _decode_or_reason(value)
    if event is None:
        assert reason and "\n" not in reason.strip()
        return
    assert event["event_type"] in codec.default_codec().catalog.names()
    # what decodes is a real event: it encodes again and reads back the same
    again = codec.decode(codec.encode(event))
    assert again == event


@fuzz_settings()
@given(data=st.binary(max_size=4096))
def test_decode_random_bytes(data):
    _decode_or_reason(data)


@fuzz_settings()
@given(topic=st.sampled_from(ALL), fp=st.binary(min_size=8, max_size=8))
def test_unknown_fingerprint_is_named_in_the_reason(topic, fp):
    known = {sv.wire_fingerprint for sv in codec.default_codec().catalog.all_versions()}
    body = S.valid_values(topic)[0][10:]
    value = S.SINGLE + fp + body
    event, reason = _decode_or_reason(value)
    if fp in known:
        return
    assert event is None
    assert reason == f"unknown schema fingerprint {int.from_bytes(fp, 'little'):016x}"


@pytest.mark.parametrize("topic", INPUTS)
def test_schema_from_the_future_is_refused_with_its_fingerprint(topic):
    value = S.future_schema_value(topic)
    event, reason = _decode_or_reason(value)
    assert event is None and reason.startswith("unknown schema fingerprint ")


@fuzz_settings()
@given(topic=st.sampled_from(ALL), data=st.data())
def test_every_accepted_json_line_encodes_and_round_trips(topic, data):
    lines = data.draw(st.lists(S.json_lines(topic), min_size=1, max_size=5))
    results = list(read_events(lines, topic))
    assert [no for no, _, _ in results] == [i for i, line in enumerate(lines, 1) if line.strip()]
    for no, event, reason in results:
        if event is None:
            assert isinstance(reason, str) and reason.strip(), (no, lines[no - 1])
            assert "Traceback" not in reason
            continue
        assert reason is None
        try:
            encoded = codec.encode(event)
        except Exception as exc:  # noqa: BLE001 - the property: validation lets nothing unencodable through
            pytest.fail(f"line accepted by telbus produce but not encodable ({type(exc).__name__}: {exc}): "
                        f"{lines[no - 1]}")
        decoded = codec.decode(encoded)
        assert jsonform.event_to_json(decoded) == jsonform.event_to_json(dict(event, **{
            k: v for k, v in decoded.items() if k not in event}))


@pytest.mark.parametrize("line,needle", [
    ('{"event_type": "Cdr"}', "Cdr"),
    ("not json", ""),
    ("[1, 2]", ""),
    ('{"event_type": "RatedCdr"}', ""),
])
def test_refused_lines_say_why(line, needle):
    (no, event, reason), = list(read_events([line], "net.cdr.raw"))
    assert event is None and reason and needle in reason


def test_samples_round_trip_through_the_json_form():
    for topic, events in S.SAMPLES.items():
        for e in events:
            ev = jsonform.event_from_json(json.loads(json.dumps(e)))
            assert codec.decode(codec.encode(ev)) == ev, topic
