"""The service as deployed, on dedicated embedded PostgreSQL and Redis: gunicorn with
counterproject/gunicorn_conf.py, a Celery worker and Celery beat (the Procfile's commands)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections

from bench.views import ROW_COUNTER_TABLE
from counterproject import embedded
from counterproject.redis_client import get_redis

RESET_TABLES = [
    "counters_event",
    "counters_idempotencytoken",
    "counters_namespace",
    "counters_apikey",
    "rollups_checkpoint",
    "rollups_sweepstate",
]


def reset_data() -> None:
    """Migrate and empty the benchmark's own database and Redis, so every run starts alike."""
    call_command("migrate", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(RESET_TABLES)}")
        cursor.execute(f"DROP TABLE IF EXISTS {ROW_COUNTER_TABLE}")
        cursor.execute(f"CREATE TABLE {ROW_COUNTER_TABLE} (name text PRIMARY KEY, value bigint NOT NULL DEFAULT 0)")
    get_redis().flushdb()


class Stack:
    """Web, worker and beat processes; each in its own process group, stopped by ``stop``."""

    def __init__(self, port: int):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.logs = embedded.data_dir() / "logs"
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        metrics_dir = embedded.data_dir() / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = os.environ | {"WEB_PORT": str(self.port), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        python = sys.executable
        commands = {
            "web": [python, "-m", "gunicorn", "counterproject.wsgi", "--config", "counterproject/gunicorn_conf.py"],
            "worker": [python, "-m", "celery", "-A", "counterproject", "worker", "--queues", "rollups,maintenance"]
            + ["--concurrency", "2", "--loglevel", "INFO"],
            "beat": [python, "-m", "celery", "-A", "counterproject", "beat", "--loglevel", "INFO", "--pidfile="],
        }
        for name, command in commands.items():
            with open(self.logs / f"{name}.log", "w") as log:
                self.processes[name] = subprocess.Popen(
                    command,
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        self._wait_until_ready()

    def _wait_until_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")
            if self._web_answers() and "ready." in (self.logs / "worker.log").read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not become ready in {timeout:.0f}s; see {self.logs}")

    def _web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def process_tree(self, name: str) -> list[psutil.Process]:
        """The live processes of one role (gunicorn master and workers, celery parent and children)."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return []
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def stop_servers() -> None:
    """Stop the embedded PostgreSQL and Redis of the benchmark's own data folder."""
    connections.close_all()
    embedded.stop()
