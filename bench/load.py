"""The load generator: wrk (a native, event-driven client) at a fixed concurrency or paced rate."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("load.lua")


@dataclass(frozen=True)
class Load:
    """One wrk run: ``rate`` is requests/s (of HTTP requests, not of events in a batch)."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"rate": round(self.rate, 1)}


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    base_url: str,
    kind: str,
    paths: list[str],
    key: str,
    *,
    connections: int,
    seconds: float,
    rate: float | None = None,
    batch_size: int = 500,
    batch_counters: int = 1000,
    batch_tokens: bool = True,
) -> Load:
    """Drive ``paths`` with ``connections`` keep-alive connections for ``seconds``.

    With ``rate``, each connection pauses ``connections / rate`` seconds between its requests, so
    the offered load stays near ``rate`` and latency is measured below saturation.
    """
    delay_ms = int(connections * 1000 / rate) if rate else 0
    env = os.environ | {
        "BENCH_KIND": kind,
        "BENCH_PATHS": " ".join(paths),
        "BENCH_KEY": key,
        "BENCH_TOKEN_PREFIX": uuid.uuid4().hex[:12],
        "BENCH_GENERATION_TIME": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "BENCH_BATCH_SIZE": str(batch_size),
        "BENCH_BATCH_COUNTERS": str(batch_counters),
        "BENCH_BATCH_TOKENS": "1" if batch_tokens else "0",
        "BENCH_DELAY_MS": str(delay_ms),
    }
    # One wrk thread: it drives thousands of requests a second and leaves the cores to the server.
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        base_url + paths[0],
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            raw = json.loads(line.removeprefix("BENCH-RESULT "))
            return Load(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                errors=raw["status_errors"] + raw["socket_errors"],
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
