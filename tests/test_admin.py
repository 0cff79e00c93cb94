"""The admin console: pages load with data, API keys show their secret once, revocation works,
namespace knobs are validated and immutable ones stay so, and the rollup actions fold counters."""

from __future__ import annotations

import re

import pytest

from counters.models import ApiKey, Event, Namespace, hash_key
from rollups.models import Checkpoint
from tests.conftest import counter_url, rollup_all, token


def write(api, namespace: str, counter: str, delta: int) -> None:
    response = api.post(
        counter_url(namespace, counter, "add"), {"delta": delta, "idempotency_token": token()}, format="json"
    )
    assert response.status_code == 200, response.content


@pytest.mark.django_db(transaction=True)
def test_every_changelist_and_the_namespace_page_load_with_data(admin_client, api, make_namespace):
    namespace = make_namespace("eventual")
    for counter, delta in (("page/a", 3), ("page/b", 4), ("other", 5)):
        write(api, namespace.name, counter.replace("/", "-"), delta)
    rollup_all(namespace)
    for url in (
        "/admin/",
        "/admin/counters/namespace/",
        "/admin/counters/apikey/",
        "/admin/counters/event/",
        f"/admin/counters/event/?namespace={namespace.name}&q=page-*",
        "/admin/rollups/checkpoint/",
        f"/admin/rollups/checkpoint/?namespace={namespace.name}&tail=yes",
        "/admin/django_celery_beat/periodictask/",
        f"/admin/counters/namespace/{namespace.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    events = admin_client.get(f"/admin/counters/event/?namespace={namespace.name}&q=page-*")
    assert events.context["cl"].result_count == 2
    exact = admin_client.get(f"/admin/rollups/checkpoint/?namespace={namespace.name}&q=other")
    assert [c.counter for c in exact.context["cl"].result_list] == ["other"]
    page = admin_client.get(f"/admin/counters/namespace/{namespace.pk}/change/").content.decode()
    assert "<th>checkpointed counters</th><td>3</td>" in page


@pytest.mark.django_db
def test_event_changelist_never_counts_the_whole_table(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get("/admin/counters/event/").status_code == 200
    counts = [
        q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and "counters_event" in q["sql"]
    ]
    assert counts and all("LIMIT 10001" in sql for sql in counts), counts


@pytest.mark.django_db
def test_created_api_key_secret_is_shown_once_and_only_its_hash_is_stored(admin_client, make_namespace):
    namespace = make_namespace("eventual")
    response = admin_client.post(
        "/admin/counters/apikey/add/", {"name": "ingest-bot", "role": "write", "namespaces": namespace.name}
    )
    assert response.status_code == 200
    page = response.content.decode()
    secrets = re.findall(r"ck_[A-Za-z0-9_-]{43}", page)
    assert len(secrets) == 1
    key = ApiKey.objects.get(name="ingest-bot")
    assert key.key_hash == hash_key(secrets[0])
    assert (key.role, key.namespaces, key.prefix) == ("write", [namespace.name], secrets[0][:10])
    change_page = admin_client.get(f"/admin/counters/apikey/{key.pk}/change/").content.decode()
    assert secrets[0] not in change_page


@pytest.mark.django_db
def test_api_key_scope_must_name_existing_namespaces(admin_client):
    response = admin_client.post("/admin/counters/apikey/add/", {"name": "bad", "role": "read", "namespaces": "nope"})
    assert response.status_code == 200
    assert "Unknown namespaces: nope." in response.content.decode()
    assert not ApiKey.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_revoked_key_is_refused_at_once(admin_client, make_namespace):
    from rest_framework.test import APIClient

    namespace = make_namespace("accurate")
    key, raw = ApiKey.generate("to-revoke", role="read")
    caller = APIClient()
    caller.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert caller.get(counter_url(namespace.name, "c")).status_code == 200
    response = admin_client.post(
        "/admin/counters/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert "Revoked 1 keys." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = caller.get(counter_url(namespace.name, "c"))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"


@pytest.mark.django_db
def test_counter_type_and_name_cannot_change_after_creation(admin_client, make_namespace):
    namespace = make_namespace("eventual", retention_days=7)
    form = {
        "name": "renamed",
        "counter_type": "best_effort",
        "retention_days": 9,
        "accept_limit_seconds": 5,
        "idempotency_window_seconds": 86400,
        "max_batch_size": 1000,
        "rollup_num_queues": 8,
        "rollup_coalesce_ms": 1000,
        "rollup_batch_size": 32,
    }
    response = admin_client.post(f"/admin/counters/namespace/{namespace.pk}/change/", form)
    assert response.status_code == 302
    namespace.refresh_from_db()
    assert (namespace.name, namespace.counter_type, namespace.retention_days) != ("renamed", "best_effort", 7)
    assert (namespace.counter_type, namespace.retention_days) == ("eventual", 9)
    assert namespace.name != "renamed"


@pytest.mark.django_db
def test_namespace_knobs_are_validated(admin_client):
    form = {
        "name": "Bad Name",
        "counter_type": "eventual",
        "ttl_seconds": 60,
        "retention_days": 0,
        "accept_limit_seconds": 5,
        "idempotency_window_seconds": 86400,
        "max_batch_size": 1000,
        "rollup_num_queues": 65,
        "rollup_coalesce_ms": 1000,
        "rollup_batch_size": 32,
    }
    response = admin_client.post("/admin/counters/namespace/add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert sorted(errors) == ["name", "retention_days", "rollup_num_queues", "ttl_seconds"]
    assert errors["ttl_seconds"] == ["Only best_effort namespaces expire counters."]
    assert not Namespace.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_force_rollup_action_folds_the_selected_counters(admin_client, api, make_namespace):
    namespace = make_namespace("eventual")
    write(api, namespace.name, "c", 4)
    write(api, namespace.name, "c", 6)
    event_ids = list(Event.objects.filter(namespace=namespace.name).values_list("id", flat=True))
    response = admin_client.post(
        "/admin/counters/event/", {"action": "force_rollup", "_selected_action": event_ids}, follow=True
    )
    assert "Rolled up 1 counters (2 events folded)." in response.content.decode()
    assert Checkpoint.objects.get(namespace=namespace.name, counter="c").last_rollup_count == 10


@pytest.mark.django_db(transaction=True)
def test_recount_action_repairs_a_drifted_checkpoint(admin_client, api, make_namespace):
    namespace = make_namespace("eventual")
    write(api, namespace.name, "c", 7)
    rollup_all(namespace)
    checkpoint = Checkpoint.objects.get(namespace=namespace.name, counter="c")
    Checkpoint.objects.filter(pk=checkpoint.pk).update(last_rollup_count=1000)
    response = admin_client.post(
        "/admin/rollups/checkpoint/", {"action": "recount", "_selected_action": [checkpoint.pk]}, follow=True
    )
    page = response.content.decode()
    assert f"Recount of {namespace.name}/c: checkpoint held 1000, events sum to 7 (repaired)." in page
    checkpoint.refresh_from_db()
    assert checkpoint.last_rollup_count == 7
