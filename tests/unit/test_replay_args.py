"""Pure parts of ``telbus replay``: argument parsing and the canonical digest framing."""
import hashlib
import io
import struct

import pytest

from telbus import replay
from telbus.progress import Progress


def test_parse_offsets_forms():
    assert replay.parse_offsets(["0:5", "3:7,4:0"], "x") == ({0: 5, 3: 7, 4: 0}, None)
    assert replay.parse_offsets(["12"], "x") == ({}, 12)
    assert replay.parse_offsets(["earliest"], "x") == ({}, 0)
    assert replay.parse_offsets(None, "x") == ({}, None)


@pytest.mark.parametrize("bad", ["a:1", "1:b", "-1:3", "1:-3", "x", "0:1,0:2"])
def test_parse_offsets_rejects(bad):
    with pytest.raises(replay.ReplayError):
        replay.parse_offsets([bad], "--from-offset")


def test_parse_time_iso_and_epoch():
    assert replay.parse_time_arg("1700000000000") == 1700000000000
    assert replay.parse_time_arg("2026-11-20T10:00:00+08:00") == replay.parse_time_arg("2026-11-20T02:00:00Z")
    assert replay.parse_time_arg("1970-01-01T00:00:01.5Z") == 1500
    with pytest.raises(replay.ReplayError, match="offset"):
        replay.parse_time_arg("2026-11-20T10:00:00")
    with pytest.raises(replay.ReplayError):
        replay.parse_time_arg("yesterday")


def test_parse_partitions():
    assert replay.parse_partitions(["3", "1,2"]) == [1, 2, 3]
    assert replay.parse_partitions(None) is None
    with pytest.raises(replay.ReplayError):
        replay.parse_partitions(["one"])


def test_record_bytes_framing_is_exactly_as_documented():
    b = replay.record_bytes(2, 10, 1234, b"k1", b"\x00\x01", [("h", b"v"), ("n", None)])
    expected = (struct.pack(">I", 2) + struct.pack(">Q", 10) + struct.pack(">q", 1234)
                + struct.pack(">I", 2) + b"k1" + struct.pack(">I", 2) + b"\x00\x01"
                + struct.pack(">I", 2)
                + struct.pack(">I", 1) + b"h" + struct.pack(">I", 1) + b"v"
                + struct.pack(">I", 1) + b"n" + b"\xff\xff\xff\xff")
    assert b == expected
    # null key/value/timestamp differ from empty ones
    assert replay.record_bytes(0, 0, None, None, None) == (
        struct.pack(">IQq", 0, 0, -1) + b"\xff\xff\xff\xff" * 2 + struct.pack(">I", 0))
    assert replay.record_bytes(0, 0, None, b"", b"") != replay.record_bytes(0, 0, None, None, None)


def test_digest_prefix_and_known_vector():
    # A fixed vector so any re-implementation (another language, another auditor) can check itself.
    h = hashlib.sha256(replay.digest_prefix("t"))
    h.update(replay.record_bytes(0, 0, 0, b"k", b"v"))
    assert replay.digest_prefix("t") == b"telbus-replay-v1\n\x00\x00\x00\x01t"
    assert h.hexdigest() == hashlib.sha256(
        b"telbus-replay-v1\n\x00\x00\x00\x01t" + bytes(4) + bytes(8) + bytes(8)
        + b"\x00\x00\x00\x01k\x00\x00\x00\x01v\x00\x00\x00\x00").hexdigest()


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_quiet_when_not_a_tty():
    s = io.StringIO()
    with Progress("x", stream=s) as p:
        p.update(5, 10, force=True)
    assert s.getvalue() == ""


def test_progress_on_tty_draws_and_erases():
    s = _Tty()
    with Progress("replay", stream=s) as p:
        p.update(5, 10, "partition 0", force=True)
    out = s.getvalue()
    assert "replay: 5/10 (50%) partition 0" in out
    assert out.endswith("\r")


def test_into_source_refused_before_any_kafka_call(capsys):
    from telbus.cli import build_parser

    args = build_parser().parse_args(["replay", "net.cdr.raw", "--from-offset", "0", "--into", "net.cdr.raw"])
    assert replay.run(args) == 2
    assert "refusing" in capsys.readouterr().err
