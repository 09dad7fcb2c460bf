"""Shared pieces of the benchmarks: a private broker, loading the CDR stream, measuring.

Benchmarks measure; tests assert. Nothing here is run by ``make test``.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

from telbus import config

RESULTS = config.ROOT / "bench" / "results"


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "kafka": "3.9.1 (single KRaft node on the same machine)"}


def cpu_seconds_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds_pid(pid: int) -> float:
    """utime+stime of a process (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks


def percentiles(values: list[float], ps=(50, 90, 95, 99, 99.9)) -> dict:
    if not values:
        return {}
    v = sorted(values)
    out = {}
    for p in ps:
        i = min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))
        out[f"p{p:g}"] = round(v[i], 4)
    out["max"] = round(v[-1], 4)
    out["n"] = len(v)
    return out


def write(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  -> {path.relative_to(config.ROOT)}: " + json.dumps(
        {k: v for k, v in result.items() if k not in ("machine", "benchmark", "measured_at")})[:300])
    return path


def total_end_offset(topic: str) -> int:
    from confluent_kafka import TopicPartition

    from telbus import kafka

    c = kafka.consumer(None)
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def create_topic(name: str, partitions: int = 12) -> None:
    from confluent_kafka.admin import NewTopic

    from telbus import kafka

    admin = kafka.admin()
    if name in admin.list_topics(timeout=10).topics:
        admin.delete_topics([name])[name].result(30)
        deadline = time.monotonic() + 30
        while name in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
            time.sleep(0.2)
    fut = admin.create_topics([NewTopic(name, partitions, 1)])[name]
    try:
        fut.result(30)
    except Exception as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=config.ROOT).stdout.strip()
    except OSError:
        return ""
