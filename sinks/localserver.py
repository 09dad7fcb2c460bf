"""A ClickHouse server on loopback for server-mode tests: ClickHouse's own HTTP interface,
served by the engine chDB embeds, in a process of its own.

Why this exists: the store's server mode (an ``http://`` DSN) has to be tested against
something that speaks ClickHouse's HTTP protocol with ClickHouse's semantics, and that
can be taken away (killed, stopped) while the sink runs. No ClickHouse server package
installs here (Debian's 18.16 has no DateTime64, which the tables use). The engine inside
chDB is clickhouse-local 26.9, which opens the same HTTP handler clickhouse-server uses
on ``SYSTEM START LISTEN HTTP`` and keeps it open while the statement's query runs. So the
server process runs that statement followed by a query that sleeps until the process is
stopped; clients (the sink, ``telbus query``) reach it with clickhouse-connect exactly as
they would reach clickhouse-server.

What differs from clickhouse-server: one default user without a password (hence loopback
only), settings from a minimal ``config.xml``, no TCP port. It is a test and development
aid, never the production store. It needs chDB's low-level ``_chdb.query`` (the
clickhouse-local entry point): the public ``chdb.connect`` cannot start listeners.

``python -m sinks.localserver --port P --data DIR`` runs one in the foreground;
:class:`LocalClickHouse` starts, stops and kills one by pid.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: keeps the listener open: one row a second for longer than anything runs
_HOLD = ("SELECT sleepEachRow(1) FROM numbers(1000000000) "
         "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0, "
         "max_execution_time = 0 FORMAT Null")


def serve(port: int, data_dir: Path) -> int:
    """Serve the store in ``data_dir`` on 127.0.0.1:``port`` until this process is stopped."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    work = data_dir.parent / f"{data_dir.name}.server"
    work.mkdir(parents=True, exist_ok=True)
    # clickhouse-local reads ./config.xml; listeners are not authenticated: loopback only
    (work / "config.xml").write_text(
        "<clickhouse>\n"
        f"  <http_port>{int(port)}</http_port>\n"
        "  <listen_host>127.0.0.1</listen_host>\n"
        "</clickhouse>\n")
    os.chdir(work)
    from chdb import _chdb

    # TabSeparated: the statement's output format becomes the HTTP interface's default,
    # and clickhouse-connect expects the server's (TabSeparated) answers
    res = _chdb.query(f"SYSTEM START LISTEN HTTP; {_HOLD}", "TabSeparated", path=str(data_dir))
    if res.has_error():
        print(f"clickhouse server stopped: {res.error_message()}", file=sys.stderr, flush=True)
        return 1
    return 0


def _ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
            return r.read().strip() == b"Ok."
    except Exception:
        return False


class LocalClickHouse:
    """One server process on ``port`` with its data in ``directory/data``."""

    def __init__(self, directory: Path, port: int | None = None):
        from telbus.localbroker import free_port

        self.dir = Path(directory)
        self.port = port or free_port()
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ``/ping`` answers."""
        if self.alive():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sinks.localserver", "--port", str(self.port), "--data",
                 str(self.dir / "data")],
                cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse server exited with {self.proc.returncode}; see {self.log}")
            if _ping(self.port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"clickhouse server did not answer within {timeout:.0f}s; see {self.log}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: the store goes away mid-whatever, as a crashed server would."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the engine shuts down cleanly), SIGKILL after ``timeout``."""
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sinks.localserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    a = p.parse_args(argv)
    return serve(a.port, a.data)


if __name__ == "__main__":
    sys.exit(main())
