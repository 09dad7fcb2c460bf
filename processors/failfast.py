"""A worker with one dead processor stops as a whole, with a non-zero status.

A worker process hosts several processors (the rating, fraud, alarm and subscription
loops, each on a thread of the Faust app). If one of them dies and the process keeps
running, its input waits unprocessed while ``telbus status`` says "running". Stopping
the whole process turns that into something every operator tool sees: the process is gone, its
``up`` metric disappears, a supervisor restarts it, and the restart rebuilds every state
from the log (which is always safe: the loops are transactional).

The stop is bounded: the other processors get ``TELBUS_WORKER_STOP_GRACE_S`` (default 20 s)
to close cleanly after SIGTERM; a loop stuck in a blocking call (a cluster that refuses
the credentials, a broker that does not answer) cannot keep the process alive past that.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

#: exit status of a worker stopped because one of its processors failed (EX_SOFTWARE)
EXIT_PROCESSOR_FAILED = 70

log = logging.getLogger("telbus.worker")
_lock = threading.Lock()
_failure: str | None = None


def failure() -> str | None:
    """Why the worker is stopping (first failure only), or None."""
    return _failure


def fail(component: str, reason: BaseException | str) -> None:
    """Record the first failure and stop the process: SIGTERM to itself (the worker's
    clean shutdown), then a hard exit once the grace period is over."""
    global _failure
    text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    with _lock:
        if _failure is not None:
            return
        _failure = f"{component}: {text}"
    log.critical("%s failed (%s); stopping the worker (exit %d) so that it is restarted and "
                 "rebuilds its state from the log", component, text, EXIT_PROCESSOR_FAILED)
    threading.Thread(target=_exit_after_grace, name="telbus-failfast", daemon=True).start()
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_after_grace() -> None:
    from telbus import config

    grace = float(config.env("TELBUS_WORKER_STOP_GRACE_S", "20"))
    # Not a wait for a condition: the deadline itself is the point (bounded shutdown).
    threading.Event().wait(grace)
    log.critical("worker did not stop within %.0fs of a processor failure; exiting now", grace)
    logging.shutdown()
    os._exit(EXIT_PROCESSOR_FAILED)


def exit_status(default: int = 0) -> int:
    return EXIT_PROCESSOR_FAILED if _failure is not None else default


def crashed_services(root) -> list[str]:
    """Names of crashed mode services under ``root`` (the Faust app and its children):
    a crash inside Faust (its web server, a timer) does not stop the worker by itself."""
    out, seen, todo = [], set(), [root]
    while todo:
        s = todo.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        if getattr(s, "crashed", False):
            reason = getattr(s, "crash_reason", None)
            out.append(f"{getattr(s, 'shortlabel', type(s).__name__)}: {reason!r}")
        todo.extend(getattr(s, "_children", ()) or ())
    return out
