"""The benchmark's reference endpoints: absent unless BENCHMARK_ENDPOINTS mounts them, and behind
the API's own authentication and roles when mounted."""

from __future__ import annotations

import pytest
from django.db import connection

from bench.views import ROW_COUNTER_TABLE


@pytest.fixture
def row_counter_table(db):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {ROW_COUNTER_TABLE} (name text PRIMARY KEY, value bigint NOT NULL DEFAULT 0)")
        cursor.execute(f"INSERT INTO {ROW_COUNTER_TABLE} (name) VALUES ('hot')")


def row_value(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {ROW_COUNTER_TABLE} WHERE name = %s", [name])  # noqa: S608
        return cursor.fetchone()[0]


def test_benchmark_endpoints_are_not_mounted_by_default(api):
    assert api.get("/bench/noop").status_code == 404


@pytest.mark.urls("bench.urls")
def test_noop_endpoint_requires_an_api_key(client_for):
    from rest_framework.test import APIClient

    assert APIClient().get("/noop").status_code == 401
    response = client_for("read").get("/noop")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.urls("bench.urls")
def test_row_counter_adds_the_delta_to_its_row(client_for, row_counter_table):
    writer = client_for("write")
    assert writer.post("/rows/hot", {"delta": 5}, format="json").status_code == 200
    assert writer.post("/rows/hot", {"delta": -2}, format="json").status_code == 200
    assert row_value("hot") == 3


@pytest.mark.urls("bench.urls")
def test_row_counter_refuses_readers_bad_deltas_and_unknown_rows(client_for, row_counter_table):
    assert client_for("read").post("/rows/hot", {"delta": 1}, format="json").status_code == 403
    writer = client_for("write")
    bad = writer.post("/rows/hot", {"delta": "1"}, format="json")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_delta")
    unknown = writer.post("/rows/cold", {"delta": 1}, format="json")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert row_value("hot") == 0
