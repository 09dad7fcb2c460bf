"""Transactional calls that outlast a broker hiccup.

librdkafka reports a timed-out ``send_offsets_to_transaction``, ``commit_transaction`` or
``abort_transaction`` as a *retriable* error: the request may still be under way, and the
documented remedy is to call the same method again. Raising instead ends the processor's
loop (and with it the worker) for what is only a broker restart or a pause of a few
seconds; the fault suite (``make chaos``) showed it on a broker kill -9. Errors that need
an abort or are fatal are raised unchanged, for the caller's own handling.
"""
from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException

log = logging.getLogger("telbus.txn")

#: How long a retriable call is retried before the error is raised after all.
RETRY_S = 300.0


def call(fn, *args, what: str = "transaction", retry_s: float = RETRY_S):
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return fn(*args)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is None or not err.retriable() or err.txn_requires_abort() or err.fatal() \
                    or time.monotonic() >= deadline:
                raise
            log.warning("%s: %s; retrying", what, err)
            time.sleep(0.5)
