"""A private stack for the fault suite: broker, topics, reference data, worker(s), sink.

Everything lives under ``.data/chaos`` and listens on 127.0.0.1 only. The broker may be
killed and restarted by the cases, so its pid and ports are kept here (same data
directory, same port: clients reconnect to the address they know). Processes are ended
by the pids this module started, never by name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

from telbus import config

SEED = 7
SUBSCRIBERS = 200


class ChaosStack:
    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.broker = None
        self.clickhouse = None       # sinks.localserver.LocalClickHouse, once a case wants one
        self.procs: dict = {}        # name -> tests.helpers.Proc (only the ones started here)
        self.reference: list = []
        self.supervised: set[str] = set()
        self.exits: list[dict] = []  # processes that ended on their own and were relaunched
        self._lock = threading.Lock()
        self._quit = threading.Event()

    # -- broker -----------------------------------------------------------------------
    def start(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        os.environ["TELBUS_DATA_DIR"] = str(self.root)
        os.environ.pop("TELBUS_KAFKA_BOOTSTRAP", None)
        os.environ["TELBUS_HTTP_HOST"] = "127.0.0.1"
        from telbus.localbroker import LocalBroker

        self.broker = LocalBroker(self.root / "kafka")
        self.broker.start()
        os.environ["TELBUS_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        (config.run_dir() / "bootstrap").write_text(self.broker.bootstrap)
        self._setup_topics()

    def _setup_topics(self) -> None:
        import topics
        from telbus import demo, kafka
        from telbus.demo_commands import publish

        kafka.wait_for_cluster(60)
        reports = topics.inspect(kafka.admin(), create=True)
        failed = [r for r in reports if any("failed" in d for d in r.details)]
        if failed:
            raise RuntimeError(f"topics not created: {failed}")
        kafka.publish_schemas()
        self.reference = demo.reference_events(SEED, SUBSCRIBERS)
        publish(self.reference)

    def broker_pid(self) -> int | None:
        return self.broker.running_pid() if self.broker else None

    def restart_broker(self) -> float:
        """Start the broker again on the same data directory and port; seconds to answer."""
        from telbus.localbroker import _reap

        pid = self.broker_pid()
        if pid is None and self.broker.pidfile.exists():
            _reap(int(self.broker.pidfile.read_text()))
        t = time.monotonic()
        self.broker.start()
        return time.monotonic() - t

    # -- telbus processes -------------------------------------------------------------
    def worker(self, name: str = "worker", worker_id: str = "1"):
        from telbus.localbroker import free_port
        from tests.helpers import Proc

        port = self.procs[name].env["TELBUS_WORKER_WEB_PORT"] if name in self.procs else str(free_port())
        return Proc(name, ["worker", "--loglevel", "warning"], log_dir=self.logs,
                    env={"TELBUS_WORKER_ID": worker_id, "TELBUS_WORKER_WEB_PORT": port})

    def sink(self, dsn: str | None = None):
        """The sink; ``dsn``: a ClickHouse server instead of the embedded store."""
        from tests.helpers import Proc

        env = {"TELBUS_LOG_LEVEL": "WARNING"}
        if dsn:
            env["TELBUS_CLICKHOUSE_DSN"] = dsn
        return Proc("sink", ["sink"], log_dir=self.logs, env=env)

    def clickhouse_server(self):
        """A ClickHouse server on loopback (started once, kept on the same port and data)."""
        from sinks.localserver import LocalClickHouse

        if self.clickhouse is None:
            self.clickhouse = LocalClickHouse(self.root / "clickhouse-server")
        self.clickhouse.start()
        return self.clickhouse

    def launch(self, proc, ready_timeout: float = 150.0):
        """Start and wait until it reports ready; it is ours to stop from now on."""
        self.procs[proc.name] = proc
        proc.start(ready_timeout=ready_timeout)
        self.supervised.add(proc.name)
        return proc

    # -- supervision ------------------------------------------------------------------
    def supervise(self) -> None:
        """Relaunch a supervised process that ended on its own, as a deployment's process
        supervisor would (a worker stops itself when one of its loops fails), and keep a
        record of it: the cases report such exits, they do not hide them."""
        def run():
            while not self._quit.wait(1.0):
                for name in sorted(self.supervised):
                    with self._lock:
                        proc = self.procs.get(name)
                        if name not in self.supervised or proc is None or proc.proc is None \
                                or proc.proc.poll() is None:
                            continue
                        code = proc.proc.returncode
                        tail = [ln for ln in proc.log_tail(40).splitlines() if "CRITICAL" in ln or "Error" in ln]
                        self.exits.append({"process": name, "exit": code, "at": time.monotonic(),
                                           "reason": (tail[-1] if tail else "")[-300:]})
                        try:
                            proc.start(ready_timeout=180)
                        except Exception as exc:
                            self.exits[-1]["relaunch_failed"] = str(exc)[:300]
        threading.Thread(target=run, name="chaos-supervisor", daemon=True).start()

    @contextlib.contextmanager
    def hands_on(self, name: str):
        """The fault handles this process itself (kills, relaunches): no supervision meanwhile."""
        with self._lock:
            self.supervised.discard(name)
        try:
            yield
        finally:
            with self._lock:
                self.supervised.add(name)

    def unsupervise(self, name: str) -> None:
        with self._lock:
            self.supervised.discard(name)

    def views_url(self, name: str = "worker") -> str:
        return f"http://127.0.0.1:{self.procs[name].env['TELBUS_WORKER_WEB_PORT']}/views"

    def alive(self) -> dict:
        return {n: p.proc is not None and p.proc.poll() is None for n, p in self.procs.items()}

    def stop(self) -> None:
        self._quit.set()
        with self._lock:
            self.supervised.clear()
        for proc in list(self.procs.values())[::-1]:
            try:
                proc.stop(timeout=20)
            except Exception:
                proc.kill9()
        if self.clickhouse is not None:
            self.clickhouse.stop()
        if self.broker is not None:
            if self.broker_pid():
                self.broker.signal(18)   # SIGCONT: a paused broker cannot act on SIGTERM
            self.broker.stop(timeout=30)
