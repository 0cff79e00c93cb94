"""Idempotency tokens: retries apply once, replays return the first response, reuse is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from counters import partitions
from counters.models import IdempotencyToken, Namespace
from rollups import pipeline
from tests.conftest import counter_url, error_of, token

TYPES = ["best_effort", "eventual", "accurate"]


def count_of(api, namespace: Namespace, counter: str) -> int:
    if namespace.uses_event_log:
        pipeline.rollup(namespace, [counter])
    return api.get(counter_url(namespace.name, counter)).json()["count"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
@pytest.mark.parametrize("action", ["add", "add-and-get"])
def test_retry_with_same_token_counts_once(api, make_namespace, counter_type, action):
    namespace = make_namespace(counter_type)
    body = {"delta": 5, "idempotency_token": token()}
    first = api.post(counter_url(namespace.name, "c", action), body, format="json")
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first
    api.post(counter_url(namespace.name, "c", "add"), {"delta": 100}, format="json")

    retry = api.post(counter_url(namespace.name, "c", action), body, format="json")

    assert retry.status_code == 200
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    if action == "add-and-get":
        assert retry.json()["count"] == 5  # the count of the first response, not today's 105
    assert count_of(api, namespace, "c") == 105


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_clear_retry_is_a_replay(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    clear = {"idempotency_token": token()}
    api.post(counter_url(namespace.name, "c", "add"), {"delta": 5}, format="json")
    first = api.post(counter_url(namespace.name, "c", "clear"), clear, format="json")
    api.post(counter_url(namespace.name, "c", "add"), {"delta": 3}, format="json")
    retry = api.post(counter_url(namespace.name, "c", "clear"), clear, format="json")
    assert (retry.status_code, retry["Idempotent-Replayed"]) == (200, "true")
    assert retry.json() == first.json() == {"namespace": namespace.name, "counter": "c", "count": 0, "applied": True}
    assert count_of(api, namespace, "c") == 3


@pytest.mark.parametrize("counter_type", TYPES)
def test_same_token_with_another_delta_or_operation_is_refused(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    assert (
        api.post(
            counter_url(namespace.name, "c", "add"), {"delta": 5, "idempotency_token": tok}, format="json"
        ).status_code
        == 200
    )
    url = counter_url(namespace.name, "c", "add")
    error_of(api.post(url, {"delta": 6, "idempotency_token": tok}, format="json"), 422, "idempotency_key_reused")
    error_of(
        api.post(
            counter_url(namespace.name, "c", "add-and-get"), {"delta": 5, "idempotency_token": tok}, format="json"
        ),
        422,
        "idempotency_key_reused",
    )
    error_of(
        api.post(counter_url(namespace.name, "c", "clear"), {"idempotency_token": tok}, format="json"),
        422,
        "idempotency_key_reused",
    )
    # Inside the test's transaction no rollup can fold: eventual still reads 0.
    expected = {"best_effort": 5, "eventual": 0, "accurate": 5}[counter_type]
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_reused_token_applies_nothing(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    url = counter_url(namespace.name, "c", "add")
    api.post(url, {"delta": 5, "idempotency_token": tok}, format="json")
    error_of(api.post(url, {"delta": 6, "idempotency_token": tok}, format="json"), 422, "idempotency_key_reused")
    assert count_of(api, namespace, "c") == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_tokens_are_scoped_to_their_counter(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    for counter in ("a", "b"):
        response = api.post(
            counter_url(namespace.name, counter, "add"), {"delta": 2, "idempotency_token": tok}, format="json"
        )
        assert "Idempotent-Replayed" not in response
    assert [count_of(api, namespace, c) for c in ("a", "b")] == [2, 2]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_idempotency_key_header_makes_a_request_retry_safe(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    url = counter_url(namespace.name, "c", "add-and-get")
    first = api.post(url, {"delta": 4}, format="json", HTTP_IDEMPOTENCY_KEY="order-17")
    api.post(counter_url(namespace.name, "c", "add"), {"delta": 1}, format="json")
    retry = api.post(url, {"delta": 4}, format="json", HTTP_IDEMPOTENCY_KEY="order-17")
    assert first.json()["count"] == 4
    assert (retry["Idempotent-Replayed"], retry.json()) == ("true", first.json())
    error_of(api.post(url, {"delta": 9}, format="json", HTTP_IDEMPOTENCY_KEY="order-17"), 422, "idempotency_key_reused")
    error_of(api.post(url, {"delta": 4}, format="json", HTTP_IDEMPOTENCY_KEY=""), 400, "invalid_token")
    error_of(api.post(url, {"delta": 4}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256), 400, "invalid_token")
    assert count_of(api, namespace, "c") == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_requests_without_a_token_are_not_deduplicated(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    for _ in range(3):
        assert api.post(counter_url(namespace.name, "c", "add"), {"delta": 2}, format="json").status_code == 200
    assert count_of(api, namespace, "c") == 6


def move_to_yesterday(namespace: str, counter: str) -> None:
    """Make the first attempt look as if it happened a day ago: an UPDATE of event_time on the
    partitioned table moves the row into yesterday's partition."""
    partitions.ensure_partitions_around_now(3)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE counters_event SET event_time = event_time - interval '1 day' "
            "WHERE namespace = %s AND counter = %s",
            [namespace, counter],
        )
        assert cursor.rowcount == 1
        cursor.execute(
            "UPDATE counters_idempotencytoken SET created_at = created_at - interval '1 day' "
            "WHERE namespace = %s AND counter = %s",
            [namespace, counter],
        )
        assert cursor.rowcount == 1
        cursor.execute(
            "SELECT tableoid::regclass::text FROM counters_event WHERE namespace = %s AND counter = %s",
            [namespace, counter],
        )
        [(partition,)] = cursor.fetchall()
        cursor.execute("SELECT ((now() - interval '1 day') AT TIME ZONE 'UTC')::date")
        yesterday = cursor.fetchone()[0]
    assert partition == partitions.name_for(yesterday)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
@pytest.mark.parametrize("action", ["add", "add-and-get"])
def test_retry_the_next_day_still_counts_once(api, make_namespace, counter_type, action):
    namespace = make_namespace(counter_type)
    generated = dt.datetime.now(dt.UTC) - dt.timedelta(hours=23)
    body = {"delta": 7, "idempotency_token": token("midnight", generation_time=generated)}
    first = api.post(counter_url(namespace.name, "m", action), body, format="json")
    assert first.status_code == 200
    move_to_yesterday(namespace.name, "m")

    retry = api.post(counter_url(namespace.name, "m", action), body, format="json")

    assert (retry.status_code, retry["Idempotent-Replayed"], retry.json()) == (200, "true", first.json())
    assert count_of(api, namespace, "m") == 7
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM counters_event WHERE namespace = %s", [namespace.name])
        assert cursor.fetchone()[0] == 1
    assert IdempotencyToken.objects.filter(namespace=namespace.name).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_repeated_token_inside_one_batch_is_a_replay(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    mutations = [
        {"counter": "a", "delta": 3, "idempotency_token": tok},
        {"counter": "b", "delta": 1, "idempotency_token": tok},
        {"counter": "a", "delta": 3, "idempotency_token": tok},
    ]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"counter": "a", "applied": True},
            {"counter": "b", "applied": True},
            {"counter": "a", "applied": False},
        ]
    }
    assert [count_of(api, namespace, c) for c in ("a", "b")] == [3, 1]

    again = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert [item["applied"] for item in again.json()["results"]] == [False, False, False]
    assert [count_of(api, namespace, c) for c in ("a", "b")] == [3, 1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_repeated_token_with_another_payload_inside_one_batch_applies_nothing(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    mutations = [
        {"counter": "b", "delta": 1},
        {"counter": "a", "delta": 3, "idempotency_token": tok},
        {"counter": "a", "delta": 4, "idempotency_token": tok},
    ]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 422, "idempotency_key_reused") == {"index": 2}
    mutations[2] = {"counter": "a", "op": "clear", "idempotency_token": tok}
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 422, "idempotency_key_reused") == {"index": 2}
    assert [count_of(api, namespace, c) for c in ("a", "b")] == [0, 0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_a_single_add_retried_inside_a_batch_is_a_replay(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    tok = token()
    api.post(counter_url(namespace.name, "a", "add"), {"delta": 3, "idempotency_token": tok}, format="json")
    mutations = [{"counter": "a", "delta": 3, "idempotency_token": tok}, {"counter": "a", "delta": 1}]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert response.json()["results"] == [{"counter": "a", "applied": False}, {"counter": "a", "applied": True}]
    assert count_of(api, namespace, "a") == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_a_batch_meeting_a_reused_token_applies_none_of_its_new_items(api, make_namespace, counter_type):
    # The one-statement write commits as it returns; a request holding a known token is redone in a
    # transaction, which must still roll back the new items when that token turns out reused.
    namespace = make_namespace(counter_type)
    used, fresh = token(), token()
    api.post(counter_url(namespace.name, "a", "add"), {"delta": 3, "idempotency_token": used}, format="json")
    mutations = [
        {"counter": "b", "delta": 1, "idempotency_token": fresh},
        {"counter": "c", "delta": 1},
        {"counter": "a", "delta": 5, "idempotency_token": used},
    ]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 422, "idempotency_key_reused") == {"index": 2}
    assert [count_of(api, namespace, c) for c in ("a", "b", "c")] == [3, 0, 0]
    assert not IdempotencyToken.objects.filter(namespace=namespace.name, counter="b").exists()
    retried = api.post(counter_url(namespace.name, "b", "add"), {"delta": 1, "idempotency_token": fresh}, format="json")
    assert (retried.status_code, "Idempotent-Replayed" in retried) == (200, False)
    assert count_of(api, namespace, "b") == 1


@pytest.mark.django_db(transaction=True)
def test_an_add_is_one_statement_after_the_key_lookup(api, make_namespace):
    namespace = make_namespace("eventual")
    api.post(counter_url(namespace.name, "a", "add"), {"delta": 1}, format="json")  # records last_used_at
    with CaptureQueriesContext(connection) as queries:
        response = api.post(
            counter_url(namespace.name, "a", "add"), {"delta": 2, "idempotency_token": token()}, format="json"
        )
    assert response.status_code == 200
    # The key with the namespace, then the write as its own transaction (no BEGIN/COMMIT trips).
    assert len(queries) == 2
    assert "counters_apikey" in queries[0]["sql"] and "counters_namespace" in queries[0]["sql"]
    assert "EXECUTE counters_write(" in queries[1]["sql"]  # _WRITE, prepared on the first add
    assert count_of(api, namespace, "a") == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("prepared", [True, False])
def test_writes_survive_a_new_connection_with_or_without_prepared_statements(api, make_namespace, settings, prepared):
    settings.COUNTERS = settings.COUNTERS | {"PREPARED_STATEMENTS": prepared}
    namespace = make_namespace("eventual")
    tok = token()
    assert api.post(counter_url(namespace.name, "a", "add"), {"delta": 2}, format="json").status_code == 200
    connection.close()  # the next request opens a connection that has prepared nothing yet
    assert (
        api.post(
            counter_url(namespace.name, "a", "add"), {"delta": 3, "idempotency_token": tok}, format="json"
        ).status_code
        == 200
    )
    replay = api.post(counter_url(namespace.name, "a", "add"), {"delta": 3, "idempotency_token": tok}, format="json")
    assert replay["Idempotent-Replayed"] == "true"
    assert count_of(api, namespace, "a") == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_non_ascii_counters_and_tokens_replay_their_first_response(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    name, tok = 'café-😀-\\"quoted\\"', token("jeton-é-😀")
    url = counter_url(namespace.name, name, "add")
    first = api.post(url, {"delta": 9223372036854775807, "idempotency_token": tok}, format="json")
    retry = api.post(url, {"delta": 9223372036854775807, "idempotency_token": tok}, format="json")
    assert (first.status_code, retry.status_code, retry["Idempotent-Replayed"]) == (200, 200, "true")
    assert (
        retry.json()
        == first.json()
        == {
            "namespace": namespace.name,
            "counter": name,
            "delta": 9223372036854775807,
            "applied": True,
        }
    )
    assert count_of(api, namespace, name) == 9223372036854775807
