"""``telbus worker``: the Faust worker running every processor in this package."""
from __future__ import annotations

import importlib
import logging

#: Processor shells registered on the shared app; each is imported if present.
AGENT_MODULES = [
    "processors.rating.agent",
    "processors.subscriptions.agent",
    "processors.fraud.agent",
    "processors.alarms.agent",
]


def load_agents() -> list[str]:
    """Import the agent modules; ``TELBUS_WORKER_AGENTS=rating,fraud`` limits the set
    (benchmarks measure one processor at a time; a deployment may split them too)."""
    from telbus import config

    only = {a.strip() for a in (config.env("TELBUS_WORKER_AGENTS") or "").split(",") if a.strip()}
    loaded = []
    for name in AGENT_MODULES:
        if only and name.split(".")[1] not in only:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        loaded.append(name)
    return loaded


def run_worker(args) -> int:
    from faust.worker import Worker

    from processors.app import app
    from telbus import config, metrics, stack

    loaded = load_agents()
    process = config.env("TELBUS_PROCESS_NAME", "worker")
    metrics.serve(process)
    # Consumer lag of the worker's groups (subscription sync and rating loops) on the inputs.
    import topics
    from telbus import lag

    inputs = [t.name for t in topics.contract_topics("input")]
    groups = [config.env("TELBUS_RATING_GROUP", "telbus-rating")]
    if "processors.subscriptions.agent" in loaded:
        from processors.subscriptions.agent import group_id

        groups.insert(0, group_id())
    for group in groups:
        lag.start(group, inputs)
    metrics.register_endpoint(process, "views", f"http://{app.conf.web_host}:{app.conf.web_port}/views")

    from processors import failfast, hosting

    @app.timer(1.0)
    async def watch_for_crashes() -> None:
        """Faust restarts nothing that crashed inside it (its consumer, table recovery):
        stop the worker instead of running on without it (see failfast.py)."""
        crashed = failfast.crashed_services(app)
        if crashed:
            failfast.fail("faust", "; ".join(crashed))

    class TelbusWorker(Worker):
        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            if await hosting.all_ready():
                stack.mark_ready(process)
                self.log.info("telbus worker ready: %s", ", ".join(loaded))

    worker = TelbusWorker(app, loglevel=args.loglevel, quiet=True, override_logging=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        if failfast.failure() is None:
            raise
        status = 1
    else:   # pragma: no cover - execute_from_commandline always raises SystemExit
        status = 0
    if failfast.failure() is not None:
        logging.getLogger("telbus.worker").critical("worker stopped: %s", failfast.failure())
    return failfast.exit_status(status)


def register(sub) -> None:
    p = sub.add_parser("worker", help="run the stream processors (Faust worker)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=run_worker)
