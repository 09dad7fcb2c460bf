"""Test helpers: waiting on conditions, running the CLI, reading topics, stack processes.

Nothing here sleeps and hopes: every wait has a condition and a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
TELBUS = str(Path(sys.executable).with_name("telbus"))


def wait_until(cond, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``cond`` until it returns a truthy value (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def unique(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def cli(*args, input: str | None = None, timeout: float = 120, env: dict | None = None, check: bool = False):
    """Run ``telbus ARGS`` as a subprocess (the real installed CLI)."""
    res = subprocess.run([TELBUS, *map(str, args)], input=input, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})}, cwd=str(ROOT))
    if check and res.returncode != 0:
        raise AssertionError(f"telbus {' '.join(map(str, args))} -> {res.returncode}\n{res.stderr}")
    return res


def end_offsets(topic: str) -> dict[int, int]:
    from telbus import kafka

    c = kafka.consumer(None)
    try:
        md = c.list_topics(topic, timeout=10)
        out = {}
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = hi
        return out
    finally:
        c.close()


def read_topic(topic: str, timeout: float = 10.0, decode: bool = True, predicate=None):
    """All records of a topic (read_committed), from the beginning to the current end.

    Returns (partition, offset, key, value) tuples, value decoded unless ``decode`` is False.
    With ``decode``, undecodable records (other tests put garbage on shared topics on
    purpose) are left out; read with ``decode=False`` to see them.
    """
    from telbus import codec, kafka

    ends = end_offsets(topic)
    want = {p: o for p, o in ends.items() if o > 0}
    c = kafka.consumer(None, **{"enable.partition.eof": True})
    out = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in want])
        done = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(want) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            key = msg.key().decode(errors="replace") if msg.key() is not None else None
            try:
                value = codec.decode(msg.value()) if decode else msg.value()
            except codec.DecodeError:
                continue
            if predicate is None or predicate(key, value):
                out.append((msg.partition(), msg.offset(), key, value))
            if msg.offset() + 1 >= want.get(msg.partition(), 0):
                done.add(msg.partition())
        return out
    finally:
        c.close()


def produce(topic: str, events: list[dict]) -> None:
    from telbus.kafka import Publisher

    pub = Publisher()
    for e in events:
        pub.send(topic, e)
    rep = pub.flush()
    assert not rep.failed, rep.failed


class Proc:
    """A telbus process started by a test: stopped (by pid) at teardown."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, log_dir: Path | None = None):
        self.name = name
        self.argv = argv
        self.env = {**os.environ, "TELBUS_PROCESS_NAME": name, **(env or {})}
        self.log_path = (log_dir or Path(os.environ.get("TELBUS_DATA_DIR", "/tmp"))) / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 120.0) -> "Proc":
        from telbus import config

        info = config.run_dir() / f"{self.name}.json"
        info.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TELBUS, *self.argv], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=str(ROOT),
                                     start_new_session=True)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return json.loads(info.read_text()).get("ready")
            except (OSError, ValueError):
                return False

        wait_until(ready, ready_timeout, 0.2, f"{self.name} ready")
        return self

    def endpoints(self) -> dict:
        from telbus import config

        return json.loads((config.run_dir() / f"{self.name}.json").read_text()).get("endpoints", {})

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


def produce_in_background(topic: str, records: list, chunk: int = 25, pause_s: float = 0.02):
    """Publish ``records`` in small chunks on a thread (a stream arriving while a test
    injects faults); join the returned thread to wait for the end."""
    import threading

    def feed():
        for i in range(0, len(records), chunk):
            produce(topic, records[i:i + chunk])
            time.sleep(pause_s)

    t = threading.Thread(target=feed, name=f"feed-{topic}", daemon=True)
    t.start()
    return t


def kill9_while_progressing(procs: list, progress, respawn, kills: int = 3, seed: int = 11) -> None:
    """kill -9 the running process (``procs[-1]``) ``kills`` times, each at a random moment
    once ``progress()`` (committed input records, -1 while unstable) has moved since the
    last restart; ``respawn()`` returns its replacement, appended to ``procs`` so the
    caller's teardown stops whichever process is running."""
    import random

    rnd = random.Random(seed)
    for _ in range(kills):
        before = wait_until(lambda: progress() + 1, 60, 0.1, "stable offsets") - 1
        wait_until(lambda: progress() > before, 90, 0.05, "progress after a restart")
        time.sleep(rnd.uniform(0.0, 0.8))
        procs[-1].kill9()
        procs.append(respawn())


def metric(url: str, name: str) -> float:
    """One series of a process's Prometheus page (the first, whatever its labels); 0 when
    the series is absent."""
    import re
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0
