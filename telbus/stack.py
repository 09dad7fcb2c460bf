"""The local stack: broker, worker and sink as background processes (``make up/down``).

Every process we start gets a pidfile under ``.data/run``; ``down`` signals exactly those
pids and nothing else. With ``TELBUS_KAFKA_BOOTSTRAP`` set, no local broker is started:
the stack runs against that cluster.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from telbus import config
from telbus.localbroker import LocalBroker, pid_alive

#: (process name, CLI subcommand, module that must exist for it to be part of the stack)
PROCESSES = [
    ("worker", ["worker"], "processors.commands"),
    ("sink", ["sink"], "sinks.commands"),
]


def broker() -> LocalBroker:
    port = int(config.env("TELBUS_LOCAL_KAFKA_PORT", "9092"))
    from telbus.localbroker import port_open

    b = LocalBroker(config.data_dir() / "kafka", port=port)
    if not (b.dir / "ports").exists() and port_open(port):
        b = LocalBroker(config.data_dir() / "kafka", port=None)  # 9092 taken by someone else
    return b


def external_cluster() -> bool:
    return bool(config.env("TELBUS_KAFKA_BOOTSTRAP"))


def _pidfile(name: str) -> Path:
    return config.run_dir() / f"{name}.pid"


def process_pid(name: str) -> int | None:
    f = _pidfile(name)
    if f.exists():
        try:
            pid = int(f.read_text())
        except ValueError:
            return None
        return pid if pid_alive(pid) else None
    return None


def log_dir() -> Path:
    d = config.data_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def start_process(name: str, argv: list[str], env: dict | None = None, timeout: float = 180.0) -> int:
    """Start ``telbus <argv>`` in the background (idempotent) and wait until it reports in."""
    pid = process_pid(name)
    if pid:
        return pid
    info = config.run_dir() / f"{name}.json"
    info.unlink(missing_ok=True)
    exe = Path(sys.executable).with_name("telbus")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "telbus.cli"]
    penv = {**os.environ, "TELBUS_PROCESS_NAME": name, **(env or {})}
    with open(log_dir() / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd + argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=penv, start_new_session=True, cwd=str(config.ROOT))
    _pidfile(name).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_dir() / (name + '.log')}")
        if info.exists():
            try:
                if json.loads(info.read_text()).get("ready"):
                    return proc.pid
            except ValueError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready within {timeout:.0f}s; see {log_dir() / (name + '.log')}")


def stop_process(name: str, timeout: float = 30.0) -> bool:
    pid = process_pid(name)
    if pid is None:
        _pidfile(name).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _pidfile(name).unlink(missing_ok=True)
    (config.run_dir() / f"{name}.json").unlink(missing_ok=True)
    return True


def mark_ready(name: str | None = None) -> None:
    """Called by a stack process once it serves: ``up`` waits for this."""
    from telbus.metrics import register_endpoint  # noqa: F401  (creates the file format)

    name = name or config.env("TELBUS_PROCESS_NAME")
    if not name:
        return
    path = config.run_dir() / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if data.get("pid") != os.getpid():
        data = {"pid": os.getpid()}
    data["ready"] = True
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def available_processes() -> list[tuple[str, list[str]]]:
    return [(n, a) for n, a, mod in PROCESSES if importlib.util.find_spec(mod.split(".")[0]) is not None
            and _module_exists(mod)]


def _module_exists(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


def up(log=print) -> None:
    from telbus import kafka
    import topics

    if not external_cluster():
        b = broker()
        t = time.monotonic()
        b.start()
        (config.run_dir() / "bootstrap").write_text(b.bootstrap)
        log(f"broker   up at {b.bootstrap} (pid {b.running_pid()}, {time.monotonic() - t:.1f}s)")
    kafka.wait_for_cluster()
    reports = topics.inspect(kafka.admin(), create=True)
    created = sum(r.status == "created" for r in reports)
    drift = [r for r in reports if r.status == "drift"]
    log(f"topics   {len(reports)} in catalog, {created} created, {len(drift)} drifted")
    for r in drift:
        log(f"         drift {r.name}: {'; '.join(r.details)}")
    kafka.publish_schemas()
    for name, argv in available_processes():
        t = time.monotonic()
        pid = start_process(name, argv)
        log(f"{name:8} up (pid {pid}, {time.monotonic() - t:.1f}s)")


def down(log=print) -> None:
    for name, _argv, _mod in reversed(PROCESSES):
        if stop_process(name):
            log(f"{name:8} stopped")
    if not external_cluster():
        if broker().stop():
            log("broker   stopped (data kept)")


def clean(log=print) -> None:
    down(log)
    d = config.data_dir()
    if d.exists():
        shutil.rmtree(d)
        log(f"removed {d}")


def status() -> dict:
    from telbus import kafka

    out: dict = {"bootstrap_servers": config.bootstrap(),
                 "kafka_client_settings": config.redact(config.kafka_passthrough())}
    try:
        md = kafka.admin().list_topics(timeout=3)
        out["kafka"] = {"reachable": True, "brokers": len(md.brokers)}
    except Exception as exc:
        out["kafka"] = {"reachable": False, "error": str(exc)}
    procs = []
    if not external_cluster():
        b = broker()
        pid = b.running_pid()
        procs.append({"name": "broker", "pid": pid, "alive": pid is not None, "endpoints": {"kafka": b.bootstrap}})
    urls: dict = {"metrics": []}
    for info in sorted(config.run_dir().glob("*.json")):
        name = info.stem
        try:
            data = json.loads(info.read_text())
        except ValueError:
            continue
        pid = data.get("pid")
        alive = bool(pid) and pid_alive(pid)
        eps = data.get("endpoints", {})
        procs.append({"name": name, "pid": pid, "alive": alive, "endpoints": eps})
        if alive:
            for kind, url in eps.items():
                if kind == "metrics":
                    urls["metrics"].append(url)
                else:
                    urls.setdefault(kind, url)
    out["processes"] = procs
    out["urls"] = urls
    return out


def register(sub) -> None:
    for name, func, text in [("up", up, "start the local stack in the background"),
                             ("down", down, "stop what `up` started (data kept)"),
                             ("clean", clean, "stop and remove all local data")]:
        p = sub.add_parser(name, help=text)
        p.set_defaults(func=lambda args, f=func: f() or 0)
