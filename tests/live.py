"""A live gunicorn serving the pytest test database and Redis db, for tests that need a real HTTP
stack (raw request paths, schemathesis). Loaded as a pytest plugin from conftest.py."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from counters.models import ApiKey, Namespace

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class LiveService:
    port: int
    key: str
    namespace: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
        """Send ``path`` byte for byte (no client-side normalisation); return status and JSON body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Authorization", f"Bearer {self.key}")
            if body is not None:
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", str(len(body.encode())))
            conn.endheaders(body.encode() if body is not None else None)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    """The test database (pytest-django has already renamed NAME) as a DATABASE_URL."""
    db = connection.settings_dict
    host = quote(db["HOST"], safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}@{host}{port}/{db['NAME']}"


def wait_until_up(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz in time")


@pytest.fixture
def live_service(transactional_db):
    """gunicorn (production settings, one worker) on a free port, sharing this test's database and
    Redis db, with an accurate namespace and an admin key reaching every namespace."""
    namespace = Namespace.objects.create(
        name=f"live-{uuid.uuid4().hex[:8]}", counter_type="accurate", accept_limit_seconds=0
    )
    _, key = ApiKey.generate("live", role="admin")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "counterproject.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "COUNTER_REDIS_DB": str(settings.COUNTERS["REDIS_DB"]),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DEBUG": "false",
        "WEB_PORT": str(port),
        "WEB_WORKERS": "1",
        "WEB_THREADS": "4",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "counterproject.wsgi", "--config", "counterproject/gunicorn_conf.py"],
        cwd=BASE_DIR,
        env=env,
    )
    try:
        wait_until_up(process, port)
        yield LiveService(port=port, key=key, namespace=namespace.name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
