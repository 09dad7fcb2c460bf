"""One KRaft broker+controller node from Maven Central jars, on loopback.

Used by ``make up`` (the developer's stack) and by the test suite (a broker of its own on
free ports). Jars are fetched once by Maven into ``.cache/kafka`` (git-ignored); storage
is formatted once; the JVM runs in its own session and is stopped by its pid only.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import base64
from pathlib import Path

from telbus import config

POM = config.ROOT / "ops" / "kafka" / "pom.xml"
LOG4J = config.ROOT / "ops" / "kafka" / "log4j.properties"


def cache_dir() -> Path:
    return Path(config.env("TELBUS_CACHE_DIR", str(config.ROOT / ".cache"))).resolve()


def jars_dir() -> Path:
    return cache_dir() / "kafka" / "libs"


def java_bin() -> str:
    home = config.env("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "java")


def ensure_jars(quiet: bool = False) -> Path:
    """Fetch the broker's jars with Maven unless a complete copy is cached."""
    libs = jars_dir()
    marker = libs / ".complete"
    stamp = POM.read_bytes()
    if marker.exists() and marker.read_bytes() == stamp:
        return libs
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    cmd = ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
           f"-Dmaven.repo.local={cache_dir() / 'm2'}"]
    if not quiet:
        print("fetching Kafka broker jars with Maven ...", file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
    marker.write_bytes(stamp)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class LocalBroker:
    """A single-node KRaft cluster living in ``directory``.

    The chosen ports are kept in ``directory/ports`` so a restart (``make down`` then
    ``make up``) comes back on the same address and clients keep working.
    """

    def __init__(self, directory: Path, port: int | None = None, extra_properties: dict | None = None,
                 listener_protocol: str = "PLAINTEXT", controller_protocol: str = "PLAINTEXT",
                 scram_users: dict[str, str] | None = None, scram_mechanism: str = "SCRAM-SHA-512",
                 client_config: dict | None = None):
        """``listener_protocol``/``controller_protocol``: security protocols of the client and
        controller listeners (their SSL/SASL settings go in ``extra_properties``).
        ``scram_users``: {name: password} stored as SCRAM credentials when the storage is
        formatted (``StorageTool format --add-scram``), so SASL/SCRAM works from the first start.
        ``client_config``: librdkafka settings (credentials) for the readiness check of a
        secured listener; without it a secured broker counts as ready once its port is open.
        """
        self.dir = Path(directory)
        self.extra = extra_properties or {}
        self.listener_protocol = listener_protocol
        self.controller_protocol = controller_protocol
        self.scram_users = dict(scram_users or {})
        self.scram_mechanism = scram_mechanism
        self.client_config = dict(client_config or {})
        ports_file = self.dir / "ports"
        if ports_file.exists():
            self.port, self.controller_port = map(int, ports_file.read_text().split())
        else:
            self.port = port or free_port()
            self.controller_port = free_port()
        self.pidfile = self.dir / "broker.pid"
        self.log = self.dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"BROKER://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"BROKER://127.0.0.1:{self.port}",
            "listener.security.protocol.map": f"BROKER:{self.listener_protocol},CONTROLLER:{self.controller_protocol}",
            "inter.broker.listener.name": "BROKER",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "12",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",   # Faust creates its internal topics itself
            "log.segment.bytes": str(256 * 1024 * 1024),
            "log.retention.check.interval.ms": "300000",
        }
        props.update(self.extra)
        return props

    def running_pid(self) -> int | None:
        if self.pidfile.exists():
            pid = int(self.pidfile.read_text())
            if pid_alive(pid):
                return pid
        return None

    def start(self, timeout: float = 90.0) -> None:
        """Start (idempotent) and wait until the broker answers on its port."""
        if self.running_pid():
            return
        libs = ensure_jars(quiet=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ports").write_text(f"{self.port} {self.controller_port}\n")
        props = self.dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        cp = f"{libs}/*"
        java = java_bin()
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            scram = []
            for name, password in sorted(self.scram_users.items()):
                scram += ["--add-scram", f"{self.scram_mechanism}=[name={name},password={password}]"]
            res = subprocess.run([java, f"-Dlog4j.configuration=file:{LOG4J}", "-cp", cp,
                                  "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props), *scram],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if res.returncode != 0:
                # the arguments carry passwords: report the tool's message, never the command
                raise RuntimeError(f"formatting the broker storage failed: {res.stderr.strip()[-2000:]}")
        heap = config.env("TELBUS_KAFKA_HEAP", "1g")
        with open(self.log, "ab") as log:
            # A fixed heap, touched at start: the process takes its memory once instead of
            # page by page over the first half hour, so its RSS shows real growth (make soak).
            proc = subprocess.Popen(
                [java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+AlwaysPreTouch", "-XX:+UseG1GC",
                 "-Djava.awt.headless=true",
                 f"-Dlog4j.configuration=file:{LOG4J}", "-cp", cp, "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}; see {self.log}")
            if port_open(self.port) and self._ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"broker did not answer within {timeout:.0f}s; see {self.log}")

    def _ready(self) -> bool:
        if self.listener_protocol != "PLAINTEXT" and not self.client_config:
            return True   # callers with credentials check readiness themselves
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config}).list_topics(timeout=2)
            return bool(md.brokers)
        except Exception:
            return False

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the broker we started (by pid): SIGTERM, then SIGKILL after ``timeout``."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        return True

    def signal(self, sig: int) -> None:
        pid = self.running_pid()
        if pid:
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
