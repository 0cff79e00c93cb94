"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real Redis (a database of
its own, flushed around every test)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from counterproject.redis_client import get_redis
from counters.models import ApiKey, Namespace

# live_service: a gunicorn on the test database, for tests that need a real HTTP stack.
pytest_plugins = ["tests.live"]


@pytest.fixture(autouse=True)
def clean_redis():
    get_redis().flushdb()
    yield
    get_redis().flushdb()


@pytest.fixture(autouse=True)
def fresh_backpressure_cache():
    from rollups import backpressure

    backpressure.reset()


def make_client(role: str = "admin", namespaces: list[str] | None = None) -> APIClient:
    _, raw = ApiKey.generate(f"test-{role}", role=role, namespaces=namespaces)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def api(db) -> APIClient:
    """A client holding an admin key that reaches every namespace."""
    return make_client("admin")


@pytest.fixture
def client_for(db):
    """``client_for(role, namespaces=None)`` makes a client with a key of that role and scope."""
    return make_client


@pytest.fixture
def make_namespace(db):
    """``make_namespace(counter_type, **fields)``: a namespace with accept_limit 0 unless told,
    so rollups fold events as soon as their transaction commits."""

    def make(counter_type: str = "eventual", name: str | None = None, **fields) -> Namespace:
        fields.setdefault("accept_limit_seconds", 0)
        return Namespace.objects.create(name=name or f"ns-{uuid.uuid4().hex[:10]}", counter_type=counter_type, **fields)

    return make


def token(value: str | None = None, generation_time: dt.datetime | None = None) -> dict:
    return {
        "token": value or uuid.uuid4().hex,
        "generation_time": (generation_time or dt.datetime.now(dt.UTC)).isoformat(),
    }


def counter_url(namespace: str, counter: str, action: str = "") -> str:
    from urllib.parse import quote

    return f"/api/v1/namespaces/{namespace}/counters/{quote(counter, safe='')}" + (f"/{action}" if action else "")


def rollup_all(namespace: Namespace) -> None:
    """Fold every queued counter of ``namespace`` now, as the workers would."""
    from rollups import pipeline, queues

    for index in range(queues.MAX_QUEUES):
        queue = queues.queue_key(namespace.name, index)
        members = get_redis().zrange(queue, 0, -1)
        if members:
            pipeline.rollup(namespace, members)


def error_of(response, status: int, code: str) -> dict:
    """Assert ``response`` is the API.md error envelope with this status and code; return its details."""
    assert response.status_code == status, response.content
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "details", "message"]
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["details"]


def in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` real threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results
