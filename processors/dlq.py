"""Dead-lettering from inside a Faust agent.

The record goes to ``<topic>.dlq`` through the app's producer, so under exactly-once it is
part of the same transaction as the offset commit: a record is either processed or
dead-lettered, never both, never neither.
"""
from __future__ import annotations

from telbus import dlq as dlq_records
from processors.app import app

_topics: dict[str, object] = {}


def _dlq_topic(source: str):
    name = dlq_records.dlq_topic(source)
    if name not in _topics:
        _topics[name] = app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)
    return _topics[name]


async def send(event, stage: str, reason: str) -> None:
    """Dead-letter the Faust ``event`` being processed (its message's original bytes)."""
    msg = event.message
    hdrs = dlq_records.headers(msg.topic, msg.partition, msg.offset, stage, reason)
    # Faust refuses a record with neither key nor value; an empty value keeps the evidence
    # (the headers) of a null record.
    value = msg.value if msg.value is not None else b""
    await _dlq_topic(msg.topic).send(key=msg.key, value=value, partition=msg.partition, headers=hdrs)
    dlq_records.count(msg.topic, reason)
