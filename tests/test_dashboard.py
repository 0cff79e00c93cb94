"""The dashboard: staff only, and its numbers agree with the API and the pipeline's state."""

from __future__ import annotations

import datetime as dt

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from counterproject import heartbeats
from counters.models import Event
from rollups import health, queues
from rollups.models import Checkpoint
from tests.conftest import counter_url, rollup_all, token


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/dashboard/", "/dashboard/data", "/dashboard/lookup?namespace=x&counter=y"])
def test_anonymous_visitors_are_sent_to_the_admin_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/dashboard/")


@pytest.mark.django_db
def test_users_without_staff_status_are_sent_to_the_admin_login(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_dashboard_page_serves_the_local_chart_library(admin_client):
    page = admin_client.get("/dashboard/").content.decode()
    assert '<script src="/static/dashboard/vendor/uPlot.iife.min.js"></script>' in page
    assert "cdn" not in page.lower()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate", "best_effort"])
def test_lookup_count_equals_get_count(admin_client, api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    for delta in (5, 7, -2):
        api.post(
            counter_url(namespace.name, "hits", "add"), {"delta": delta, "idempotency_token": token()}, format="json"
        )
    if namespace.uses_event_log:
        rollup_all(namespace)
    api.post(counter_url(namespace.name, "hits", "add"), {"delta": 100}, format="json")
    expected = api.get(counter_url(namespace.name, "hits")).json()["count"]
    result = admin_client.get(f"/dashboard/lookup?namespace={namespace.name}&counter=hits").json()
    assert int(result["count"]) == expected
    if counter_type == "best_effort":
        assert (result["checkpoint"], result["tail"], result["recent_events"]) == (None, None, [])
        return
    assert expected == (10 if counter_type == "eventual" else 110)
    assert result["checkpoint"]["count"] == "10"
    assert result["tail"] == {"events": 1, "adds": "100", "clears": 0}
    assert [event["delta"] for event in result["recent_events"]] == ["100", "-2", "7", "5"]


@pytest.mark.django_db(transaction=True)
def test_overview_reports_ingest_backlog_lag_and_stale_counters(admin_client, api, make_namespace):
    namespace = make_namespace("eventual")
    for counter in ("a", "b"):
        api.post(counter_url(namespace.name, counter, "add"), {"delta": 1}, format="json")
    rollup_all(namespace)
    queues.purge(namespace.name)  # as if the workers had drained them
    api.post(counter_url(namespace.name, "a", "add"), {"delta": 1}, format="json")
    an_hour_ago = timezone.now() - dt.timedelta(hours=1)
    Checkpoint.objects.filter(namespace=namespace.name, counter="b").update(
        last_rollup_ts=an_hour_ago, last_write_ts=an_hour_ago + dt.timedelta(seconds=1)
    )
    heartbeats.stamp(heartbeats.BEAT)

    data = admin_client.get(f"/dashboard/data?namespace={namespace.name}").json()

    assert data["last_hour"] == {"ingest": 3, "rollup": 0, "throttled": 0, "rollup_failed": 0}
    assert sum(data["series"]["ingest"]) == 3 and len(data["series"]["ingest"]) == 60
    assert data["backlog"] == 1
    assert data["queues"] == [
        {"namespace": namespace.name, "queue": queues.queue_index("a", namespace.rollup_num_queues), "depth": 1}
    ]
    assert data["lag_seconds"]["sampled"] == 1 and data["lag_seconds"]["never_rolled"] == 0
    assert 0 <= data["lag_seconds"]["max"] < 60
    assert [(s["counter"], round(s["behind_seconds"] / 60)) for s in data["stale"]] == [("b", 60)]
    assert data["checkpoints"] == 2
    assert data["heartbeats"]["beat"]["alive"] is True
    assert data["heartbeats"]["worker"] == {"age_seconds": None, "alive": False}
    assert data["partitions"] and data["retention_horizon"]


@pytest.mark.django_db
def test_overview_of_an_unknown_namespace_is_404(admin_client):
    assert admin_client.get("/dashboard/data?namespace=nope").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("/dashboard/lookup?namespace=acc&counter=a%00b", "invalid counter name: must not contain '\\x00'"),
        ("/dashboard/lookup?namespace=acc&counter=a%2Fb", "invalid counter name: must not contain '/'"),
        ("/dashboard/lookup?namespace=acc&counter=", "invalid counter name: must be 1 to 255 code points"),
        ("/dashboard/lookup?namespace=a%00c&counter=hits", "invalid namespace name 'a\\x00c'"),
        ("/dashboard/lookup?counter=hits", "invalid namespace name ''"),
        ("/dashboard/data?namespace=a%00c", "invalid namespace name 'a\\x00c'"),
        ("/dashboard/data?namespace=Upper", "invalid namespace name 'Upper'"),
    ],
)
def test_invalid_names_are_a_400_naming_the_problem(admin_client, make_namespace, url, error):
    make_namespace("eventual", name="acc")
    response = admin_client.get(url)
    assert response.status_code == 400
    assert response.json() == {"error": error}


@pytest.mark.django_db
def test_lookup_of_a_valid_counter_in_an_unknown_namespace_is_404(admin_client):
    response = admin_client.get("/dashboard/lookup?namespace=nope&counter=hits")
    assert (response.status_code, response.json()) == (404, {"error": "unknown namespace"})


def _idle_counters_read_after_their_rollup(api, namespace) -> None:
    """Three rolled-up counters with no write since, queued again by a read."""
    for counter in ("idle-1", "idle-2", "idle-3"):
        api.post(counter_url(namespace.name, counter, "add"), {"delta": 1}, format="json")
    rollup_all(namespace)
    queues.purge(namespace.name)
    for counter in ("idle-1", "idle-2", "idle-3"):
        assert api.get(counter_url(namespace.name, counter)).json()["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_lag_counts_only_queued_counters_with_unfolded_writes_from_their_oldest_one(api, make_namespace):
    namespace = make_namespace("eventual")
    _idle_counters_read_after_their_rollup(api, namespace)
    api.post(counter_url(namespace.name, "busy", "add"), {"delta": 5}, format="json")
    api.post(counter_url(namespace.name, "busy", "add"), {"delta": 6}, format="json")
    rollup_all(namespace)
    api.post(counter_url(namespace.name, "busy", "add"), {"delta": 7}, format="json")
    api.post(counter_url(namespace.name, "busy", "add"), {"delta": 8}, format="json")
    oldest_unfolded = Event.objects.get(namespace=namespace.name, counter="busy", delta=7).event_time
    # An hour on, the idle checkpoints are an hour old but nothing waits for them.
    later = timezone.now() + dt.timedelta(hours=1)

    backlog = health.backlog(namespace.name, later)

    assert backlog.depth == 4
    assert backlog.lags == [(later - oldest_unfolded).total_seconds()]
    assert backlog.never_rolled == 0


@pytest.mark.django_db(transaction=True)
def test_reads_of_rolled_up_counters_add_no_lag_to_the_dashboard(admin_client, api, make_namespace):
    namespace = make_namespace("eventual")
    _idle_counters_read_after_their_rollup(api, namespace)

    data = admin_client.get(f"/dashboard/data?namespace={namespace.name}").json()

    assert data["backlog"] == 3
    assert data["lag_seconds"] == {"p50": None, "p99": None, "max": None, "sampled": 0, "never_rolled": 0}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["/dashboard/data", "/admin/counters/namespace/"])
def test_operator_pages_replace_a_connection_that_died_while_idle(admin_client, url):
    assert admin_client.get(url).status_code == 200
    with psycopg2.connect(**connection.get_connection_params()) as other, other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.get_backend_pid()])
    assert admin_client.get(url).status_code == 200
