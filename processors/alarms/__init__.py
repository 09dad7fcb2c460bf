"""Alarm correlation: raw alarms -> incidents (oss.alarm.raw -> oss.incidents).

Pure logic lives in ``topology`` (NE registry, subscriber placement) and ``correlate``
(dedup, clear matching, topology root cause, merging, flapping); the Faust shell is
``agent``.
"""
