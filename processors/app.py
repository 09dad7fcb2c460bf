"""The Faust app of ``telbus worker``.

Every processor is a confluent-kafka transactional loop hosted on a thread of this app
(``processors/hosting.py``): Faust keeps the worker process, its lifecycle, signals and
crash handling, and its web server serves the subscription views. No Faust agent, table
or Kafka client is used: their at-least-once commits and buffered changelog writes could
not give the exactly-once results the processors promise (the module docstrings of
``processors.rating.agent`` and ``processors.subscriptions.agent`` say what failed).
"""
from __future__ import annotations

import faust
import faust.app.base

from telbus import config


def worker_id() -> str:
    return config.env("TELBUS_WORKER_ID", "1")


def web_port() -> int:
    """The views' HTTP port: TELBUS_WORKER_WEB_PORT (default 6066); 0 picks a free one
    (tests, several workers on one machine)."""
    port = int(config.env("TELBUS_WORKER_WEB_PORT", "6066"))
    if port == 0:
        from telbus.localbroker import free_port

        port = free_port()
    return port


class WorkerApp(faust.App):
    """Faust without its Kafka clients: nothing here consumes or produces through Faust,
    and an idle Faust consumer would still join a group of its own (after a kill -9 the
    restarted worker waited out the dead member's 60 s session before saying ready)."""

    class BootStrategy(faust.app.base.BootStrategy):
        enable_kafka = False


def create_app() -> faust.App:
    datadir = config.data_dir() / "worker" / worker_id()
    datadir.mkdir(parents=True, exist_ok=True)
    return WorkerApp(
        config.env("TELBUS_WORKER_APP_ID", "telbus"),
        store="memory://",
        datadir=str(datadir),
        web_host=config.http_host(),
        web_bind=config.http_host(),
        web_port=web_port(),
        autodiscover=False,
    )


app = create_app()


def authorized(request) -> bool:
    """Bearer-token check for the worker's HTTP views (a no-op on loopback without a token)."""
    return config.bearer_ok(request.headers.get("Authorization"), config.http_token())
