"""Many writers at once, with real threads, real HTTP handling and real transactions."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from counters.models import Namespace
from rollups import pipeline
from tests.conftest import counter_url, in_threads, make_client, token

THREADS = 16


def final_count(namespace: Namespace, counter: str) -> int:
    if namespace.uses_event_log:
        pipeline.rollup(namespace, [counter])
    return make_client("read").get(counter_url(namespace.name, counter)).json()["count"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["best_effort", "eventual", "accurate"])
@pytest.mark.parametrize("action", ["add", "add-and-get"])
def test_concurrent_requests_with_one_token_apply_it_once(make_namespace, counter_type, action):
    namespace = make_namespace(counter_type)
    clients = [make_client("write") for _ in range(THREADS)]
    body = {"delta": 5, "idempotency_token": token()}

    responses = in_threads(
        THREADS, lambda i: clients[i].post(counter_url(namespace.name, "one", action), body, format="json")
    )

    fresh = [r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r]
    replays = [r for r in responses if r.status_code == 200 and r.get("Idempotent-Replayed") == "true"]
    busy = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1
    assert len(fresh) + len(replays) + len(busy) == THREADS
    assert all(r.json()["error"]["code"] == "idempotency_in_progress" for r in busy)
    assert all(r.json() == fresh[0].json() for r in replays)
    if action == "add-and-get":
        assert fresh[0].json()["count"] == 5
    assert final_count(namespace, "one") == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["best_effort", "eventual", "accurate"])
def test_concurrent_adds_to_one_new_counter_all_count(make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    clients = [make_client("write") for _ in range(THREADS)]

    responses = in_threads(
        THREADS,
        lambda i: clients[i].post(
            counter_url(namespace.name, "hot", "add-and-get"), {"delta": 1, "idempotency_token": token()}, format="json"
        ),
    )

    assert [r.status_code for r in responses] == [200] * THREADS
    counts = sorted(r.json()["count"] for r in responses)
    if counter_type == "accurate":
        # Read-your-writes: each count includes its own add and whatever had committed before it.
        assert all(1 <= c <= THREADS for c in counts)
    if counter_type == "best_effort":
        assert counts == list(range(1, THREADS + 1))  # one atomic INCRBY each
    assert final_count(namespace, "hot") == THREADS


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["best_effort", "eventual", "accurate"])
def test_concurrent_batches_on_shared_counters_all_count(make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    clients = [make_client("write") for _ in range(8)]
    url = f"/api/v1/namespaces/{namespace.name}/batch"

    def batch(i: int):
        mutations = [{"counter": c, "delta": i + 1, "idempotency_token": token()} for c in ("x", "y", "z")]
        return clients[i].post(url, {"mutations": mutations}, format="json")

    responses = in_threads(8, batch)

    assert [r.status_code for r in responses] == [200] * 8
    assert [final_count(namespace, c) for c in ("x", "y", "z")] == [36, 36, 36]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_a_token_held_by_an_open_request_is_409_then_a_replay(make_namespace, counter_type):
    from django.db import transaction

    from counters import services

    namespace = make_namespace(counter_type)
    tok = token()
    generation_time = services.Token(tok["token"], dt.datetime.fromisoformat(tok["generation_time"]))
    claimed, release = threading.Event(), threading.Event()

    def first_request() -> None:
        try:
            with transaction.atomic():
                services.mutate(namespace, [services.Mutation("held", "add", 3, generation_time)], "add")
                claimed.set()
                assert release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=first_request)
    holder.start()
    client = make_client("write")
    try:
        assert claimed.wait(timeout=30)
        response = client.post(
            counter_url(namespace.name, "held", "add"), {"delta": 3, "idempotency_token": tok}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_in_progress"
    finally:
        release.set()
        holder.join(timeout=30)

    retry = client.post(
        counter_url(namespace.name, "held", "add"), {"delta": 3, "idempotency_token": tok}, format="json"
    )
    assert (retry.status_code, retry["Idempotent-Replayed"]) == (200, "true")
    assert final_count(namespace, "held") == 3
