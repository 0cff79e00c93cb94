"""The fault-injection cluster: real PostgreSQL, Redis, gunicorn, Celery workers and beat, all
started by the suite under a temporary folder so that any of them can be killed and restarted
without touching the servers other suites share.

The processes run the production settings (``counterproject.settings``) with the embedded
servers of ``COUNTER_DATA_DIR``; the knobs that set the pace of convergence are shortened (1 s
accept limit, 2 s leases, a stale sweep every 2 s) so that each fault converges in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis
import requests

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# Free ports picked when the suite loads: fixed ones (8110, 8111) let two runs on one machine
# talk to each other's servers.
WEB_PORT = free_port()
SHEDDING_WEB_PORT = free_port()
SWEEP_EVERY_SECONDS = 2
ARTIFACT = ROOT / "artifacts" / "faults.json"

_REPORT: list[dict] = []


class Cluster:
    """The processes of one deployment, by name, with their logs under ``root/logs``."""

    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")
            and not key.startswith(("COUNTER_", "PYTEST_"))
        }
        self.env.update(
            {
                "COUNTER_DATA_DIR": str(root / "data"),
                "DJANGO_SETTINGS_MODULE": "counterproject.settings",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
                "COUNTER_ROLLUP_LEASE_SECONDS": "2",
                "COUNTER_STALE_AFTER_SECONDS": "1",
                "COUNTER_MAX_WRITE_LATENCY_MS": "2000",
                "WEB_WORKERS": "2",
                "WEB_THREADS": "4",
            }
        )
        self.processes: dict[str, subprocess.Popen] = {}
        self.database: dict[str, str] = {}
        self.redis_url = ""

    # -- the embedded servers --------------------------------------------------------------

    def _embedded(self, code: str) -> str:
        script = "from counterproject import embedded\n" + code
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start_servers(self) -> None:
        started = json.loads(
            self._embedded("import json; print(json.dumps([embedded.ensure_postgres(), embedded.ensure_redis()]))")
        )
        self.database, self.redis_url = started

    def stop_postgres(self) -> None:
        self._embedded("embedded._pg_ctl(embedded.data_dir() / 'postgres', ['-w', 'stop', '-m', 'fast'])")

    def kill_redis(self) -> None:
        pid = int((self.root / "data" / "redis" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.01)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute(query, params)
            rows = cursor.fetchall() if cursor.description else []
        connection.close()
        return rows

    def connect(self):
        return psycopg2.connect(
            host=self.database["HOST"], dbname=self.database["NAME"], user=self.database["USER"], connect_timeout=5
        )

    # -- the service processes ---------------------------------------------------------------

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def spawn(self, name: str, argv: list[str], **env: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child process owns it
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def web(self, name: str = "web", port: int = WEB_PORT, **env: str) -> None:
        config = str(ROOT / "counterproject" / "gunicorn_conf.py")
        self.spawn(
            name, [str(VENV_BIN / "gunicorn"), "counterproject.wsgi", "--config", config], WEB_PORT=str(port), **env
        )
        _wait_http(f"http://127.0.0.1:{port}/healthz", self.processes[name])

    def worker(self, name: str) -> None:
        # One process per worker (solo pool): kill -9 of the worker is kill -9 of the batch it runs.
        self.spawn(
            name,
            [
                str(VENV_BIN / "celery"), "-A", "counterproject", "worker", "--pool", "solo",
                "--queues", "rollups,maintenance", "--hostname", f"{name}@faults",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING",
            ],
        )  # fmt: skip

    def beat(self, name: str = "beat") -> None:
        schedule = str(self.root / f"{name}-schedule")
        self.spawn(
            name,
            [
                str(VENV_BIN / "celery"),
                "-A",
                "counterproject",
                "beat",
                "--pidfile=",
                "-s",
                schedule,
                "--loglevel",
                "WARNING",
            ],
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM if name.startswith("web") else signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="faults-", dir="/tmp"))
    deployment = Cluster(root)
    try:
        deployment.start_servers()
        deployment.manage("migrate", "--noinput", "-v", "0")
        _shorten_schedules(deployment)
        deployment.api_key = deployment.manage("createapikey", "faults", "--role", "admin")
        deployment.web()
        deployment.worker("worker-1")
        deployment.worker("worker-2")
        deployment.beat()
        yield deployment
    finally:
        deployment.stop_all()
        subprocess.run(
            [sys.executable, "-c", "from counterproject import embedded; embedded.stop()"],
            cwd=ROOT,
            env=deployment.env,
            capture_output=True,
            timeout=120,
        )
        if not os.environ.get("FAULTS_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def _shorten_schedules(deployment: Cluster) -> None:
    # The admin's way: edit the persisted schedules; beat's DatabaseScheduler reads them.
    deployment.sql(
        """
        WITH every AS (
            INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (%s, 'seconds') RETURNING id)
        UPDATE django_celery_beat_periodictask SET interval_id = (SELECT id FROM every)
        WHERE task = 'rollups.sweep_stale'
        """,
        (SWEEP_EVERY_SECONDS,),
    )
    deployment.sql("UPDATE django_celery_beat_periodictasks SET last_update = now()")


@pytest.fixture
def namespace(cluster):
    """A fresh eventual namespace on the cluster with a 1 s accept limit."""
    from counterclient import Counters

    name = f"f-{uuid.uuid4().hex[:8]}"
    admin = Counters(f"http://127.0.0.1:{WEB_PORT}", cluster.api_key, max_retries=5)
    admin.create_namespace(
        name, "eventual", accept_limit_seconds=1, rollup={"num_queues": 4, "coalesce_ms": 200, "batch_size": 8}
    )
    return name


@pytest.fixture
def report():
    """``report(row)`` records one fault's figures for the summary table and artifacts/faults.json."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter):
    if not _REPORT:
        return
    columns = [
        "fault",
        "sent",
        "acknowledged",
        "rejected_429",
        "retried_unknown",
        "lost",
        "double_counted",
        "converge_s",
    ]
    widths = [max(len(column), *(len(str(row[column])) for row in _REPORT)) for column in columns]
    terminalreporter.section("fault injection")
    terminalreporter.write_line("  ".join(column.ljust(width) for column, width in zip(columns, widths)))
    for row in _REPORT:
        terminalreporter.write_line("  ".join(str(row[column]).ljust(width) for column, width in zip(columns, widths)))
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_REPORT, indent=2) + "\n")
    terminalreporter.write_line(f"written to {ARTIFACT.relative_to(ROOT)}")
