"""Keys, roles, scopes, rate limits, the error envelope of Django's own errors, and deploy settings."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import get_resolver
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from counters import reads
from counters.api import urls as api_urls
from counters.api.auth import DenyAll, HasRole
from counters.api.views import ApiView
from counters.models import ApiKey, Event, Namespace
from tests.conftest import counter_url

BASE_DIR = Path(__file__).resolve().parent.parent


def client_with(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def error(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return response.status_code, body["error"]["code"]


@pytest.mark.django_db
def test_only_the_hash_of_a_key_is_stored():
    key, raw = ApiKey.generate("k", role="write")
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert stored["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert not any(raw in str(value) for value in stored.values())
    assert raw.startswith(stored["prefix"]) and len(stored["prefix"]) < len(raw) // 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token ck_x", "Bearer ck_unknown", "Bearer ck_a ck_b"],
    ids=["missing", "no-key", "blank-key", "basic", "other-scheme", "unknown-key", "two-keys"],
)
def test_requests_without_a_valid_key_are_unauthenticated(make_namespace, header):
    namespace = make_namespace("accurate")
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    for response in (
        client.get("/api/v1/namespaces"),
        client.post(counter_url(namespace.name, "hits", "add"), {"delta": 1}, format="json"),
    ):
        assert error(response) == (401, "unauthenticated")
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_revoked_key_stops_working_at_once(make_namespace):
    namespace = make_namespace("accurate")
    key, raw = ApiKey.generate("soon-revoked", role="write")
    client = client_with(raw)
    assert client.post(counter_url(namespace.name, "hits", "add"), {"delta": 1}, format="json").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    response = client.post(counter_url(namespace.name, "hits", "add"), {"delta": 1}, format="json")
    assert error(response) == (401, "unauthenticated")
    assert reads.get_count(namespace, "hits").count == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "role, method, path, status",
    [
        ("read", "get", "/api/v1/namespaces", 200),
        ("read", "get", "/api/v1/namespaces/{ns}/counters/hits", 200),
        ("read", "post", "/api/v1/namespaces/{ns}/counters/hits/add", 403),
        ("read", "post", "/api/v1/namespaces/{ns}/counters/hits/clear", 403),
        ("read", "post", "/api/v1/namespaces/{ns}/batch", 403),
        ("read", "patch", "/api/v1/namespaces/{ns}", 403),
        ("write", "post", "/api/v1/namespaces/{ns}/counters/hits/add", 200),
        ("write", "post", "/api/v1/namespaces", 403),
        ("write", "patch", "/api/v1/namespaces/{ns}", 403),
        ("write", "delete", "/api/v1/namespaces/{ns}", 403),
        ("admin", "patch", "/api/v1/namespaces/{ns}", 200),
    ],
)
def test_roles_gate_operations(client_for, make_namespace, role, method, path, status):
    namespace = make_namespace("accurate")
    bodies = {"post": {"delta": 1}, "patch": {"max_batch_size": 7}}
    if path.endswith("batch"):
        bodies["post"] = {"mutations": [{"counter": "hits", "delta": 1}]}
    if path == "/api/v1/namespaces":
        bodies["post"] = {"name": "created", "counter_type": "eventual"}
    response = getattr(client_for(role), method)(path.format(ns=namespace.name), bodies.get(method), format="json")
    assert response.status_code == status
    if status == 403:
        assert error(response) == (403, "forbidden")
        namespace.refresh_from_db()
        assert (namespace.max_batch_size, Event.objects.count()) == (1000, 0)


@pytest.mark.django_db
def test_a_scoped_key_cannot_read_write_or_learn_of_other_namespaces(client_for, make_namespace, api):
    mine, theirs = make_namespace("accurate", name="mine"), make_namespace("accurate", name="theirs")
    assert api.post(counter_url("theirs", "hits", "add"), {"delta": 5}, format="json").status_code == 200
    scoped = client_for("admin", namespaces=["mine"])
    attempts = {
        "detail": scoped.get("/api/v1/namespaces/theirs"),
        "count": scoped.get(counter_url("theirs", "hits")),
        "listing": scoped.get("/api/v1/namespaces/theirs/counters"),
        "add": scoped.post(counter_url("theirs", "hits", "add"), {"delta": 1}, format="json"),
        "clear": scoped.post(counter_url("theirs", "hits", "clear"), {}, format="json"),
        "batch": scoped.post("/api/v1/namespaces/theirs/batch", {"mutations": []}, format="json"),
        "patch": scoped.patch("/api/v1/namespaces/theirs", {"max_batch_size": 1}, format="json"),
        "delete": scoped.delete("/api/v1/namespaces/theirs"),
    }
    assert {name: error(response) for name, response in attempts.items()} == {
        name: (404, "namespace_not_found") for name in attempts
    }
    # Indistinguishable from a namespace that does not exist.
    missing = scoped.get("/api/v1/namespaces/nonexistent")
    assert (
        missing.json()["error"]["message"].replace("nonexistent", "theirs")
        == attempts["detail"].json()["error"]["message"]
    )
    listing = scoped.get("/api/v1/namespaces").json()
    assert [ns["name"] for ns in listing["results"]] == [mine.name]
    assert reads.get_count(theirs, "hits").count == 5
    theirs.refresh_from_db()
    assert theirs.max_batch_size == 1000


def api_views():
    for pattern in api_urls.urlpatterns:
        yield pattern.callback.view_class


def test_every_api_view_authorizes_through_hasrole_and_declares_its_roles():
    assert api_settings.DEFAULT_PERMISSION_CLASSES == [DenyAll]
    for view in api_views():
        assert issubclass(view, ApiView)
        assert view.permission_classes == [HasRole]
        handlers = {method.upper() for method in view.http_method_names if hasattr(view, method)} - {"OPTIONS"}
        assert set(view.required_roles) == handlers, view


def test_a_view_without_declared_roles_is_denied_to_every_key():
    class Undeclared(ApiView):
        def get(self, request):
            raise AssertionError("must not run")

    key = ApiKey(role="admin", namespaces=[])
    request = type("R", (), {"auth": key, "method": "GET"})()
    assert HasRole().has_permission(request, Undeclared()) is False
    assert DenyAll().has_permission(request, Undeclared()) is False


@pytest.mark.django_db
def test_the_schema_and_docs_are_the_only_unauthenticated_api_paths():
    anonymous = APIClient()
    assert anonymous.get("/api/schema/").status_code == 200
    assert anonymous.get("/api/docs/").status_code == 200
    api_paths = [str(p.pattern) for p in get_resolver().url_patterns if str(p.pattern).startswith("api/")]
    assert sorted(api_paths) == ["api/docs/", "api/schema/", "api/v1/"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/", "/admin/counters/apikey/", "/dashboard/"])
def test_admin_and_dashboard_need_a_staff_login(client, path):
    assert client.get(path).status_code == 302
    user = User.objects.create_user("plain", password="pw-123456789")
    client.force_login(user)
    assert client.get(path).status_code == 302
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    assert client.get(path).status_code == 200


def at_start_of_a_second() -> None:
    """The rate window is the wall-clock second; start a burst early in one so it fits inside."""
    time.sleep(1 - time.time() % 1 + 0.01)


@pytest.mark.django_db
def test_a_key_over_its_rate_gets_429_with_retry_after_and_nothing_applied(make_namespace):
    namespace = make_namespace("accurate")
    limited, raw = ApiKey.generate("limited", role="write")
    ApiKey.objects.filter(pk=limited.pk).update(rate_limit_per_second=3)
    _, other_raw = ApiKey.generate("other", role="write")
    client, other = client_with(raw), client_with(other_raw)
    url = counter_url(namespace.name, "hits", "add")
    at_start_of_a_second()
    statuses = [client.post(url, {"delta": 1}, format="json").status_code for _ in range(3)]
    throttled = client.post(url, {"delta": 1}, format="json")
    unaffected = other.post(url, {"delta": 10}, format="json")
    assert statuses == [200, 200, 200]
    assert error(throttled) == (429, "rate_limited")
    assert throttled["Retry-After"] == "1"
    assert throttled.json()["error"]["details"] == {"retry_after": 1}
    assert unaffected.status_code == 200
    assert reads.get_count(namespace, "hits").count == 13
    time.sleep(1 - time.time() % 1 + 0.01)
    assert client.post(url, {"delta": 1}, format="json").status_code == 200


@pytest.mark.django_db
def test_the_default_rate_applies_to_keys_without_their_own(settings):
    settings.COUNTERS = {**settings.COUNTERS, "RATE_LIMIT_PER_SECOND": 1}
    _, default_raw = ApiKey.generate("default")
    unlimited, unlimited_raw = ApiKey.generate("unlimited")
    ApiKey.objects.filter(pk=unlimited.pk).update(rate_limit_per_second=0)
    default, free = client_with(default_raw), client_with(unlimited_raw)
    at_start_of_a_second()
    assert [default.get("/api/v1/namespaces").status_code for _ in range(2)] == [200, 429]
    assert [free.get("/api/v1/namespaces").status_code for _ in range(5)] == [200] * 5


@pytest.mark.django_db
def test_unauthenticated_requests_are_refused_before_they_count_against_a_rate(settings):
    settings.COUNTERS = {**settings.COUNTERS, "RATE_LIMIT_PER_SECOND": 1}
    anonymous = APIClient()
    at_start_of_a_second()
    assert [anonymous.get("/api/v1/namespaces").status_code for _ in range(3)] == [401] * 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/api/v1/no-such-thing", 404, "not_found"),
        ("get", "/api/nothing", 404, "not_found"),
        ("get", "/api/v1/namespaces/", 404, "not_found"),
        ("put", "/api/v1/namespaces", 405, "method_not_allowed"),
        ("delete", "/api/v1/namespaces/x/counters/hits/add", 405, "method_not_allowed"),
        ("post", "/api/schema/", 405, "method_not_allowed"),
    ],
)
def test_django_and_drf_errors_on_api_paths_use_the_envelope(api, method, path, status, code):
    response = getattr(api, method)(path)
    assert error(response) == (status, code)
    assert response["Content-Type"] == "application/json"
    if status == 405:
        assert "Allow" in response


@pytest.mark.django_db
def test_an_unhandled_exception_is_a_500_envelope_without_a_traceback(api, make_namespace, monkeypatch):
    namespace = make_namespace("accurate")

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(reads, "get_count", explode)
    api.raise_request_exception = False
    response = api.get(counter_url(namespace.name, "hits"))
    assert error(response) == (500, "internal_error")
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_before_parsing(api, make_namespace, settings):
    namespace = make_namespace("accurate")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(
        counter_url(namespace.name, "hits", "add"),
        '{"delta": 1, "x": "' + "y" * 2000 + '"}',
        content_type="application/json",
    )
    assert error(response) == (413, "payload_too_large")
    assert response.json()["error"]["details"] == {"limit": 1000}
    assert Event.objects.count() == 0


def test_non_api_paths_keep_django_pages(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "counters.example.com",
    "SECURE_COOKIES": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_SSL_REDIRECT": "true",
}


def test_check_deploy_is_clean_with_production_settings():
    env = {**os.environ, **PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE": "counterproject.settings"}
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode, run.stdout.strip()) == (0, "System check identified no issues (0 silenced)."), run.stderr


def test_debug_is_off_unless_asked_for():
    env = {key: value for key, value in os.environ.items() if key != "DEBUG"}
    run = subprocess.run(
        [sys.executable, "-c", "from counterproject import settings; print(settings.DEBUG)"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.strip() == "False"


@pytest.mark.django_db
def test_a_scoped_key_creates_namespaces_only_within_its_scope(client_for, make_namespace):
    make_namespace("accurate", name="theirs")
    scoped = client_for("admin", namespaces=["mine", "theirs-not"])
    attempts = {
        name: scoped.post("/api/v1/namespaces", {"name": name, "counter_type": "eventual"}, format="json")
        for name in ("scopedmade", "theirs")
    }
    # An existing namespace and a new one outside the scope look the same: no 409 leaks existence.
    assert {name: error(response) for name, response in attempts.items()} == {
        "scopedmade": (403, "forbidden"),
        "theirs": (403, "forbidden"),
    }
    assert sorted(Namespace.objects.values_list("name", flat=True)) == ["theirs"]
    created = scoped.post("/api/v1/namespaces", {"name": "mine", "counter_type": "eventual"}, format="json")
    assert created.status_code == 201
    assert sorted(Namespace.objects.values_list("name", flat=True)) == ["mine", "theirs"]


@pytest.mark.django_db
def test_a_host_outside_allowed_hosts_gets_the_envelope_on_api_paths(api, make_namespace):
    namespace = make_namespace("accurate")
    response = api.post(
        counter_url(namespace.name, "hits", "add"), {"delta": 1}, format="json", HTTP_HOST="evil.example"
    )
    assert error(response) == (400, "invalid_request")
    assert response["Content-Type"] == "application/json"
    assert Event.objects.count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["get", "add"])
def test_a_connection_that_died_while_idle_is_replaced_without_failing_the_request(api, make_namespace, action):
    # As after a PostgreSQL restart: no per-request health check, so the key lookup meets the
    # dead connection and, being a read, is redone on a new one.
    namespace = make_namespace("accurate")
    assert api.post(counter_url(namespace.name, "c", "add"), {"delta": 2}, format="json").status_code == 200
    with psycopg2.connect(**connection.get_connection_params()) as other, other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.get_backend_pid()])
        assert cursor.fetchone() == (True,)
    if action == "add":
        response = api.post(counter_url(namespace.name, "c", "add"), {"delta": 3}, format="json")
        assert (response.status_code, response.json()["applied"]) == (200, True)
    else:
        assert api.get(counter_url(namespace.name, "c")).status_code == 200
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == (5 if action == "add" else 2)
