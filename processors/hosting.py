"""Hosting a blocking processor loop inside ``telbus worker``.

Rating, fraud, alarm correlation and subscription sync run confluent-kafka transactional
loops (librdkafka calls block), each on a thread of its own inside the Faust worker
process, which keeps the process lifecycle, signals and the HTTP views. A loop whose transactional producer
was fenced (a broker away longer than the transaction timeout) is started again in place,
its state rebuilt from the log; any other fatal error in a loop stops the whole worker with
a non-zero status (``processors/failfast.py``), and the restart rebuilds every state from
the log, which is always safe.
"""
from __future__ import annotations

import logging
from typing import Callable


def restartable(exc: BaseException) -> bool:
    """A Kafka error that escaped a transactional loop: a fenced or otherwise fatally failed
    producer (a broker away longer than the transaction timeout), or a timed-out
    send-offsets/commit/abort (a broker restarting). The loop's position in its open
    transaction is then unknown; a new producer (``init_transactions`` with the same
    transactional.id aborts what the old one left open) and a state rebuilt from the
    changelog are the safe answer. Calling the timed-out method again, as librdkafka
    allows, was seen to block for good after a broker kill -9 (make chaos). Restarting
    the whole worker would also do, but costs every loop its state rebuild."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    err = exc.args[0]
    return err.fatal() or err.retriable() or err.code() in (
        KafkaError._FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.PRODUCER_FENCED, KafkaError._TIMED_OUT)


class Restarts:
    """At most ``limit`` in-process restarts within ``window_s``; past that, something
    else is wrong and the worker stops (failfast)."""

    def __init__(self, limit: int = 3, window_s: float = 300.0, clock=None):
        import time

        self.limit, self.window_s = limit, window_s
        self.clock = clock or time.monotonic
        self.times: list[float] = []

    def allow(self) -> bool:
        now = self.clock()
        self.times = [t for t in self.times if now - t < self.window_s]
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


#: The services hosting a loop in this worker (readiness: ``all_ready``).
HOSTED: list = []


async def all_ready(poll_s: float = 0.1) -> bool:
    """Wait until every hosted loop is connected and consuming (its ``ready`` event); False
    as soon as the worker is failing instead (a refused password, say): the worker must
    not call itself ready when its processors never got to work."""
    import asyncio

    from processors import failfast

    while failfast.failure() is None:
        if all(svc.processor.ready.is_set() for svc in HOSTED):
            return True
        await asyncio.sleep(poll_s)
    return False


def host_in_worker(name: str, make_processor: Callable[[], object], start_early: bool = False) -> None:
    """Run ``make_processor().run()`` on a thread while the worker runs; ``stop()`` at exit.

    ``start_early``: start with the app itself instead of after Faust's own group assignment
    and table recovery (which, after a kill -9, waits for the dead member's Faust session
    to expire). For loops with their own group and state that must not wait on Faust's.
    """
    import asyncio
    import threading

    import mode

    from processors import failfast
    from processors.app import app

    log = logging.getLogger(f"telbus.{name}")

    class ProcessorService(mode.Service):
        def __post_init__(self) -> None:
            self.processor = make_processor()
            self.thread: threading.Thread | None = None
            self.processor_stopping = False

        async def on_started(self) -> None:
            def target() -> None:
                restarts = Restarts()
                while True:
                    try:
                        self.processor.run()
                    except BaseException as exc:  # noqa: BLE001 - reported to the worker
                        if self.processor_stopping:
                            return
                        if restartable(exc) and restarts.allow():
                            log.warning("%s: %s; starting the loop again in this worker (its state is "
                                        "rebuilt from the log)", name, exc)
                            self.processor = make_processor()
                            continue
                        log.exception("%s: fatal error", name)
                        failfast.fail(name, exc)
                    else:
                        if not self.processor_stopping:
                            failfast.fail(name, "its loop ended without being asked to stop")
                    return

            self.thread = threading.Thread(target=target, name=f"telbus-{name}", daemon=True)
            self.thread.start()

        async def on_stop(self) -> None:
            self.processor_stopping = True
            self.processor.stop()
            if self.thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 30)

    # A named class in this module (mode resolves services by module and qualified name),
    # so logs say RatingService, FraudService, AlarmsService.
    cls_name = f"{name.capitalize()}Service"
    cls = type(cls_name, (ProcessorService,), {"__module__": __name__, "__qualname__": cls_name})
    globals()[cls_name] = cls
    svc = cls()
    HOSTED.append(svc)
    if start_early:
        app.add_dependency(svc)
    else:
        app.service(svc)


def run_standalone(name: str, processor_cls) -> int:
    """Run one transactional loop as a process of its own (``python -m processors.<name>.agent``):
    metrics, SIGTERM/SIGINT stop it cleanly, ready once it consumes."""
    import signal

    from telbus import config, metrics, stack

    logging.basicConfig(level=config.env("TELBUS_LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    process = config.env("TELBUS_PROCESS_NAME", name)
    metrics.serve(process)
    proc = processor_cls(process=process)
    signal.signal(signal.SIGTERM, lambda *_: proc.stop())
    signal.signal(signal.SIGINT, lambda *_: proc.stop())
    proc.run(on_ready=lambda: stack.mark_ready(process))
    return 0
