"""JSON lines <-> event dicts: the CLI's input and output form (CONTRACT §1).

Input is checked field by field against the event's schema so a bad line is refused with a
reason a person can act on ("Cdr.duration_s: expected int, got 'abc'"), before anything is
published. Timestamps come in as ISO-8601 with an offset or epoch-ms ints and go out as
ISO-8601 UTC with a ``Z``.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from telbus.schemas import Catalog, catalog

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_OFFSET_RE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


class InvalidEvent(ValueError):
    """A JSON event that does not match its schema; the message names the field."""


def parse_time(value, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidEvent(f"{where}: expected timestamp, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if not _OFFSET_RE.search(value):
            raise InvalidEvent(f"{where}: timestamp {value!r} has no UTC offset (use Z or +08:00)")
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"{where}: not an ISO-8601 timestamp: {value!r}") from None
        delta = dt - _EPOCH
        return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    raise InvalidEvent(f"{where}: expected timestamp, got {value!r}")


def format_time(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _is_ts(schema) -> bool:
    return isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis"


class _Walker:
    """Walks a schema alongside a value; named types are remembered as they are defined."""

    def __init__(self):
        self.named: dict[str, dict] = {}

    def resolve(self, schema):
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.named[schema.rsplit(".", 1)[-1]]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            self.named.setdefault(schema["name"], schema)
        return schema

    def from_json(self, schema, value, where: str):
        schema = self.resolve(schema)
        if isinstance(schema, list):  # union: only ["null", T] is used here
            if value is None:
                if "null" in schema:
                    return None
                raise InvalidEvent(f"{where}: must not be null")
            branches = [s for s in schema if s != "null"]
            return self.from_json(branches[0], value, where)
        if _is_ts(schema):
            return parse_time(value, where)
        t = schema["type"] if isinstance(schema, dict) else schema
        if t in ("record", "enum", "array", "map") or isinstance(t, (dict, list)):
            if isinstance(t, (dict, list)):
                return self.from_json(t, value, where)
            return getattr(self, "_" + t)(schema, value, where)
        return _primitive(t, value, where)

    def _record(self, schema, value, where):
        if not isinstance(value, dict):
            raise InvalidEvent(f"{where}: expected object, got {_show(value)}")
        out = {}
        names = {f["name"] for f in schema["fields"]}
        for f in schema["fields"]:
            fw = f"{where}.{f['name']}"
            if f["name"] in value:
                out[f["name"]] = self.from_json(f["type"], value[f["name"]], fw)
            elif "default" in f:
                out[f["name"]] = f["default"]
            else:
                raise InvalidEvent(f"{fw}: missing required field")
        extra = sorted(set(value) - names - {"event_type"})
        if extra:
            raise InvalidEvent(f"{where}: unknown field(s) {', '.join(extra)}")
        return out

    def _enum(self, schema, value, where):
        if value not in schema["symbols"]:
            raise InvalidEvent(f"{where}: {_show(value)} is not one of {'|'.join(schema['symbols'])}")
        return value

    def _array(self, schema, value, where):
        if not isinstance(value, list):
            raise InvalidEvent(f"{where}: expected array, got {_show(value)}")
        return [self.from_json(schema["items"], v, f"{where}[{i}]") for i, v in enumerate(value)]

    def _map(self, schema, value, where):
        if not isinstance(value, dict):
            raise InvalidEvent(f"{where}: expected object, got {_show(value)}")
        return {str(k): self.from_json(schema["values"], v, f"{where}.{k}") for k, v in value.items()}

    def to_json(self, schema, value):
        schema = self.resolve(schema)
        if value is None:
            return None
        if isinstance(schema, list):
            return self.to_json([s for s in schema if s != "null"][0], value)
        if _is_ts(schema):
            return format_time(value)
        t = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(t, (dict, list)):
            return self.to_json(t, value)
        if t == "record":
            return {f["name"]: self.to_json(f["type"], value.get(f["name"])) for f in schema["fields"]}
        if t == "array":
            return [self.to_json(schema["items"], v) for v in value]
        if t == "map":
            return {k: self.to_json(schema["values"], v) for k, v in value.items()}
        if t == "bytes":
            return value.hex()
        return value


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _show(v) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _primitive(t: str, value, where: str):
    if t == "string":
        if isinstance(value, str):
            return value
    elif t in ("int", "long"):
        if isinstance(value, int) and not isinstance(value, bool):
            lo, hi = (INT_MIN, INT_MAX) if t == "int" else (LONG_MIN, LONG_MAX)
            if not lo <= value <= hi:
                raise InvalidEvent(f"{where}: {value} out of range for {t}")
            return value
    elif t == "boolean":
        if isinstance(value, bool):
            return value
    elif t in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif t == "null":
        if value is None:
            return None
    raise InvalidEvent(f"{where}: expected {t}, got {_show(value)}")


def event_from_json(obj, cat: Catalog | None = None, allowed=None) -> dict:
    """A JSON object (already parsed) -> a validated event dict.

    ``allowed``: the event types the destination topic carries; others are refused first,
    so the reason names the real mistake rather than a field of the wrong schema.
    """
    cat = cat or catalog()
    if not isinstance(obj, dict):
        raise InvalidEvent(f"expected a JSON object, got {_show(obj)}")
    name = obj.get("event_type")
    if not isinstance(name, str) or name not in cat.history:
        raise InvalidEvent(f"unknown event_type {_show(name)}")
    if allowed is not None and name not in allowed:
        raise InvalidEvent(f"event_type {name} does not belong on this topic (expected {'|'.join(allowed)})")
    schema = json.loads(cat.current(name).json)
    event = _Walker().from_json(schema, obj, name)
    event["event_type"] = name
    return event


def parse_line(line: str, cat: Catalog | None = None, allowed=None) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc.msg} at column {exc.colno}") from None
    return event_from_json(obj, cat, allowed)


def event_to_json(event: dict, cat: Catalog | None = None) -> dict:
    """An event dict -> a JSON-ready dict (``event_type`` first, ISO-8601 UTC times)."""
    cat = cat or catalog()
    name = event["event_type"]
    schema = json.loads(cat.current(name).json)
    return {"event_type": name, **_Walker().to_json(schema, event)}
