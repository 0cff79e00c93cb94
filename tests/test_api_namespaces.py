"""Namespace management: list, create, get, patch and delete (API.md "Namespaces")."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from counterproject.redis_client import get_redis
from counters.models import Event, IdempotencyToken, Namespace
from rollups import pipeline, queues, tails
from rollups.models import Checkpoint
from tests.conftest import counter_url, error_of, rollup_all, token

DEFAULTS = {
    "ttl_seconds": None,
    "retention_days": 7,
    "accept_limit_seconds": 5,
    "idempotency_window_seconds": 86400,
    "max_batch_size": 1000,
    "rollup": {"num_queues": 8, "coalesce_ms": 1000, "batch_size": 32},
}


def without_created_at(body: dict) -> dict:
    assert body["created_at"].endswith("Z")
    return {key: value for key, value in body.items() if key != "created_at"}


def test_create_echoes_the_full_configuration_with_defaults(api):
    response = api.post("/api/v1/namespaces", {"name": "orders", "counter_type": "eventual"}, format="json")
    assert response.status_code == 201
    assert without_created_at(response.json()) == {"name": "orders", "counter_type": "eventual", **DEFAULTS}
    assert Namespace.objects.get(name="orders").accept_limit_seconds == 5


def test_create_takes_every_optional_field(api):
    body = {
        "name": "clicks",
        "counter_type": "best_effort",
        "ttl_seconds": 3600,
        "retention_days": 3,
        "accept_limit_seconds": 2,
        "idempotency_window_seconds": 600,
        "max_batch_size": 50,
        "rollup": {"num_queues": 4, "coalesce_ms": 200, "batch_size": 16},
    }
    response = api.post("/api/v1/namespaces", body, format="json")
    assert response.status_code == 201
    assert without_created_at(response.json()) == body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "counter_type": "eventual", "colour": "red"}, "invalid_request"),
        ({"name": "Upper", "counter_type": "eventual"}, "invalid_name"),
        ({"name": "-dash", "counter_type": "eventual"}, "invalid_name"),
        ({"name": "x", "counter_type": "exact"}, "invalid_request"),
        ({"counter_type": "eventual"}, "invalid_name"),
        ({"name": "x", "counter_type": "eventual", "ttl_seconds": 60}, "invalid_request"),
        ({"name": "x", "counter_type": "eventual", "max_batch_size": 0}, "invalid_request"),
        ({"name": "x", "counter_type": "eventual", "retention_days": "7"}, "invalid_request"),
        ({"name": "x", "counter_type": "eventual", "rollup": {"num_queues": 65}}, "invalid_request"),
    ],
)
def test_create_refuses_invalid_bodies(api, body, code):
    details = error_of(api.post("/api/v1/namespaces", body, format="json"), 400, code)
    assert details["fields"]
    assert Namespace.objects.count() == 0


def test_create_refuses_an_existing_name(api, make_namespace):
    make_namespace("eventual", name="taken")
    details = error_of(
        api.post("/api/v1/namespaces", {"name": "taken", "counter_type": "accurate"}, format="json"),
        409,
        "namespace_exists",
    )
    assert details == {"name": "taken"}
    assert Namespace.objects.get(name="taken").counter_type == "eventual"


def test_only_admin_keys_create_namespaces(client_for):
    for role in ("read", "write"):
        response = client_for(role).post("/api/v1/namespaces", {"name": "n", "counter_type": "eventual"}, format="json")
        error_of(response, 403, "forbidden")
    assert Namespace.objects.count() == 0


def test_list_is_ordered_by_name_and_paginated(api, make_namespace):
    for name in ("gamma", "alpha", "delta", "beta", "epsilon"):
        make_namespace("eventual", name=name)
    first = api.get("/api/v1/namespaces?limit=2").json()
    assert [ns["name"] for ns in first["results"]] == ["alpha", "beta"]
    second = api.get(first["next"]).json()
    assert [ns["name"] for ns in second["results"]] == ["delta", "epsilon"]
    third = api.get(second["next"]).json()
    assert [ns["name"] for ns in third["results"]] == ["gamma"]
    assert third["next"] is None
    assert without_created_at(first["results"][0]) == {"name": "alpha", "counter_type": "eventual", **DEFAULTS} | {
        "accept_limit_seconds": 0
    }


def test_list_shows_only_the_namespaces_a_key_reaches(client_for, make_namespace):
    for name in ("one", "two", "three"):
        make_namespace("eventual", name=name)
    body = client_for("read", ["three", "one"]).get("/api/v1/namespaces").json()
    assert [ns["name"] for ns in body["results"]] == ["one", "three"]
    assert body["next"] is None


def test_list_refuses_a_bad_limit(api):
    error_of(api.get("/api/v1/namespaces?limit=0"), 400, "invalid_request")
    error_of(api.get("/api/v1/namespaces?limit=abc"), 400, "invalid_request")


def test_get_returns_the_configuration(client_for, make_namespace):
    make_namespace("accurate", name="pages", max_batch_size=10)
    response = client_for("read").get("/api/v1/namespaces/pages")
    assert response.status_code == 200
    assert without_created_at(response.json()) == {"name": "pages", "counter_type": "accurate", **DEFAULTS} | {
        "accept_limit_seconds": 0,
        "max_batch_size": 10,
    }


def test_get_of_an_unknown_or_unreachable_namespace_is_404(client_for, make_namespace):
    make_namespace("eventual", name="hidden")
    error_of(client_for("admin").get("/api/v1/namespaces/missing"), 404, "namespace_not_found")
    error_of(client_for("admin", ["other"]).get("/api/v1/namespaces/hidden"), 404, "namespace_not_found")


def test_patch_changes_only_the_given_fields(api, make_namespace):
    make_namespace("eventual", name="tune")
    response = api.patch("/api/v1/namespaces/tune", {"max_batch_size": 7, "rollup": {"batch_size": 64}}, format="json")
    assert response.status_code == 200
    assert without_created_at(response.json()) == {"name": "tune", "counter_type": "eventual", **DEFAULTS} | {
        "accept_limit_seconds": 0,
        "max_batch_size": 7,
        "rollup": {"num_queues": 8, "coalesce_ms": 1000, "batch_size": 64},
    }
    stored = Namespace.objects.get(name="tune")
    assert (stored.max_batch_size, stored.rollup_batch_size, stored.accept_limit_seconds) == (7, 64, 0)


def test_patch_refuses_immutable_fields_and_unknown_fields(api, make_namespace):
    make_namespace("eventual", name="fixed")
    error_of(api.patch("/api/v1/namespaces/fixed", {"counter_type": "accurate"}, format="json"), 400, "invalid_request")
    error_of(api.patch("/api/v1/namespaces/fixed", {"name": "moved"}, format="json"), 400, "invalid_name")
    error_of(api.patch("/api/v1/namespaces/fixed", {"colour": "red"}, format="json"), 400, "invalid_request")
    error_of(api.patch("/api/v1/namespaces/fixed", {"ttl_seconds": 5}, format="json"), 400, "invalid_request")
    stored = Namespace.objects.get(name="fixed")
    assert (stored.counter_type, stored.ttl_seconds) == ("eventual", None)


def test_patch_and_delete_need_an_admin_key(client_for, make_namespace):
    make_namespace("eventual", name="guarded")
    writer = client_for("write")
    error_of(writer.patch("/api/v1/namespaces/guarded", {"max_batch_size": 3}, format="json"), 403, "forbidden")
    error_of(writer.delete("/api/v1/namespaces/guarded"), 403, "forbidden")
    assert Namespace.objects.get(name="guarded").max_batch_size == 1000


def test_delete_of_an_unknown_namespace_is_404(api):
    error_of(api.delete("/api/v1/namespaces/nothing"), 404, "namespace_not_found")


def redis_keys_of(namespace: str) -> list[str]:
    return sorted(key for key in get_redis().scan_iter(match="*") if f"{{{namespace}" in key)


def event_rows(namespace: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM counters_event WHERE namespace = %s", [namespace])
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_delete_removes_events_tokens_checkpoints_cache_and_queued_rollups(
    api, make_namespace, counter_type, monkeypatch
):
    # counters_event is not managed by Django, so transactional tests do not flush it: the names
    # are unique per test.
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 1)  # accurate reads of "c" leave a tail summary
    monkeypatch.setattr(tails, "SETTLE_SECONDS", 0)
    doomed = make_namespace(counter_type, name=f"doomed-{counter_type}")
    kept = make_namespace(counter_type, name=f"kept-{counter_type}")
    for namespace in (doomed, kept):
        for counter in ("a", "b"):
            body = {"delta": 2, "idempotency_token": token()}
            assert api.post(counter_url(namespace.name, counter, "add"), body, format="json").status_code == 200
        rollup_all(namespace)
        api.get(counter_url(namespace.name, "a"))  # caches the checkpoint
        queues.trigger(namespace.name, namespace.rollup_num_queues, ["a"], 0)
        pipeline.drain(namespace, queues.queue_index("a", namespace.rollup_num_queues))
        api.post(counter_url(namespace.name, "c", "add"), {"delta": 1}, format="json")  # queued, not rolled up
        assert api.get(counter_url(namespace.name, "c")).json()["count"] == (1 if counter_type == "accurate" else 0)
    assert event_rows(doomed.name) == 3
    assert any(key.startswith("tail:") for key in redis_keys_of(doomed.name)) == (counter_type == "accurate")
    assert IdempotencyToken.objects.filter(namespace=doomed.name).count() == 2
    assert Checkpoint.objects.filter(namespace=doomed.name).count() == 2
    assert queues.depths(doomed.name)
    assert redis_keys_of(doomed.name)

    response = api.delete(f"/api/v1/namespaces/{doomed.name}")

    assert response.status_code == 204
    assert response.content == b""
    assert not Namespace.objects.filter(name=doomed.name).exists()
    assert event_rows(doomed.name) == 0
    assert Event.objects.filter(namespace=doomed.name).count() == 0
    assert IdempotencyToken.objects.filter(namespace=doomed.name).count() == 0
    assert Checkpoint.objects.filter(namespace=doomed.name).count() == 0
    assert redis_keys_of(doomed.name) == []
    error_of(api.get(f"/api/v1/namespaces/{doomed.name}"), 404, "namespace_not_found")
    error_of(api.get(counter_url(doomed.name, "a")), 404, "namespace_not_found")
    assert event_rows(kept.name) == 3
    assert Checkpoint.objects.filter(namespace=kept.name).count() == 2
    assert api.get(counter_url(kept.name, "a")).json()["count"] == 2


@pytest.mark.django_db(transaction=True)
def test_delete_removes_best_effort_values_and_tokens(api, make_namespace):
    make_namespace("best_effort", name="gone", ttl_seconds=600)
    make_namespace("best_effort", name="stays")
    for name in ("gone", "stays"):
        body = {"delta": 4, "idempotency_token": token()}
        assert api.post(counter_url(name, "x", "add"), body, format="json").status_code == 200
    assert redis_keys_of("gone")

    assert api.delete("/api/v1/namespaces/gone").status_code == 204

    assert redis_keys_of("gone") == []
    assert api.get(counter_url("stays", "x")).json()["count"] == 4


@pytest.mark.django_db(transaction=True)
def test_a_recreated_namespace_starts_from_zero(api, make_namespace):
    namespace = make_namespace("eventual")
    api.post(counter_url(namespace.name, "n", "add"), {"delta": 9}, format="json")
    rollup_all(namespace)
    assert api.delete(f"/api/v1/namespaces/{namespace.name}").status_code == 204
    body = {"name": namespace.name, "counter_type": "accurate"}
    assert api.post("/api/v1/namespaces", body, format="json").status_code == 201
    body = api.get(counter_url(namespace.name, "n")).json()
    assert (body["count"], body["consistency"]) == (0, "accurate")


@pytest.mark.django_db(transaction=True)
def test_a_write_in_flight_during_delete_leaves_no_event_behind(api, make_namespace):
    import threading

    from django.db import transaction

    from counters import services

    namespace = make_namespace("accurate")
    name = namespace.name
    in_transaction, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                services.mutate(namespace, [services.Mutation("x", "add", 5, None)], "add")
                in_transaction.set()
                assert release.wait(timeout=30)
        finally:
            connection.close()

    def deleter() -> None:
        try:
            services.delete_namespace(Namespace.objects.get(name=name))
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert in_transaction.wait(timeout=30)
    deleting = threading.Thread(target=deleter)
    deleting.start()
    deleting.join(timeout=0.5)
    release.set()
    writer.join(timeout=30)
    deleting.join(timeout=30)

    assert not deleting.is_alive()
    assert event_rows(name) == 0
    assert api.post("/api/v1/namespaces", {"name": name, "counter_type": "accurate"}, format="json").status_code == 201
    assert api.get(counter_url(name, "x")).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_write_with_a_namespace_loaded_before_its_delete_is_404(api, make_namespace):
    from counters import services
    from counters.exceptions import NamespaceNotFound

    namespace = make_namespace("eventual")
    assert api.delete(f"/api/v1/namespaces/{namespace.name}").status_code == 204
    with pytest.raises(NamespaceNotFound):
        services.mutate(namespace, [services.Mutation("x", "add", 5, None)], "add")
    assert event_rows(namespace.name) == 0


def test_read_only_fields_in_a_body_are_unknown_fields(api, make_namespace):
    namespace = make_namespace("eventual", name="kept")
    created_at = "2020-01-01T00:00:00Z"
    create = api.post(
        "/api/v1/namespaces", {"name": "fresh", "counter_type": "eventual", "created_at": created_at}, format="json"
    )
    patch = api.patch("/api/v1/namespaces/kept", {"created_at": created_at}, format="json")
    for response in (create, patch):
        assert error_of(response, 400, "invalid_request") == {"fields": {"created_at": ["Unknown field."]}}
    assert list(Namespace.objects.values_list("name", "created_at")) == [("kept", namespace.created_at)]


@pytest.mark.django_db(transaction=True)
def test_creating_a_name_whose_delete_is_still_running_is_409_then_succeeds(api):
    from counters import services

    holding, release = threading.Event(), threading.Event()

    def deleting() -> None:
        try:
            with services._name_lock("reborn", wait=True):
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=deleting)
    thread.start()
    assert holding.wait(10)
    body = {"name": "reborn", "counter_type": "eventual"}
    response = api.post("/api/v1/namespaces", body, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "namespace_being_deleted"
    assert not Namespace.objects.filter(name="reborn").exists()
    release.set()
    thread.join(10)
    assert api.post("/api/v1/namespaces", body, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_new_namespace_never_inherits_data_left_by_a_delete_that_died(api):
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO counters_event (namespace, counter, kind, delta) VALUES ('phoenix', 'c', 0, 41)")
    assert (
        api.post("/api/v1/namespaces", {"name": "phoenix", "counter_type": "accurate"}, format="json").status_code
        == 201
    )
    assert api.get("/api/v1/namespaces/phoenix/counters/c").json()["count"] == 0
