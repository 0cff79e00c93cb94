"""Operations endpoints and signals: /metrics, /readyz with the beat heartbeat, request ids, JSON
logs, and the per-minute activity series the dashboard draws."""

from __future__ import annotations

import json
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.signals import before_task_publish
from prometheus_client import REGISTRY

from counterproject import activity, heartbeats, middleware, views
from counterproject.redis_client import get_redis
from rollups import pipeline, queues, tasks
from tests.conftest import counter_url, rollup_all, token

ROOT = Path(__file__).resolve().parent.parent


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- /metrics ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_count_requests_by_route_name_and_status(client):
    labels = {"endpoint": "healthz", "method": "GET", "status": "200"}
    before = sample("counter_http_requests_total", **labels)
    assert client.get("/healthz").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert sample("counter_http_requests_total", **labels) == before + 1
    text = response.content.decode()
    assert 'counter_http_requests_total{endpoint="healthz",method="GET",status="200"}' in text
    assert 'counter_http_request_seconds_bucket{endpoint="healthz",le="0.001",method="GET"}' in text


@pytest.mark.django_db
def test_unknown_paths_share_one_label_instead_of_one_per_path(client):
    before = sample("counter_http_requests_total", endpoint="unmatched", method="GET", status="404")
    client.get("/no-such-page-1")
    client.get("/no-such-page-2")
    assert sample("counter_http_requests_total", endpoint="unmatched", method="GET", status="404") == before + 2


@pytest.mark.django_db(transaction=True)
def test_metrics_report_ingest_and_queue_depth_at_scrape_time(client, api, make_namespace):
    namespace = make_namespace("eventual")
    before = sample("counter_events_ingested_total", namespace=namespace.name, counter_type="eventual")
    for counter in ("a", "b", "c"):
        api.post(counter_url(namespace.name, counter, "add"), {"delta": 5, "idempotency_token": token()}, format="json")
    assert sample("counter_events_ingested_total", namespace=namespace.name, counter_type="eventual") == before + 3
    text = client.get("/metrics").content.decode()
    depth_lines = [
        line
        for line in text.splitlines()
        if line.startswith(f'counter_rollup_queue_depth{{namespace="{namespace.name}"')
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in depth_lines) == 3.0
    assert f'counter_rollup_never_rolled{{namespace="{namespace.name}"}} 3.0' in text


@pytest.mark.django_db(transaction=True)
def test_metrics_lag_ignores_queued_counters_without_unfolded_writes(client, api, make_namespace):
    namespace = make_namespace("eventual")
    for counter in ("a", "b"):
        api.post(counter_url(namespace.name, counter, "add"), {"delta": 1}, format="json")
    rollup_all(namespace)
    queues.purge(namespace.name)
    for counter in ("a", "b"):
        api.get(counter_url(namespace.name, counter))
    text = client.get("/metrics").content.decode()
    assert [
        line
        for line in text.splitlines()
        if line.startswith(f'counter_rollup_lag_seconds{{namespace="{namespace.name}"')
    ] == [
        f'counter_rollup_lag_seconds{{namespace="{namespace.name}",quantile="{quantile}"}} 0.0'
        for quantile in ("0.5", "0.99", "1")
    ]
    assert f'counter_rollup_queue_depth{{namespace="{namespace.name}",queue="' in text


@pytest.mark.django_db
def test_every_namespace_has_its_labelled_series_at_zero_before_any_increment(client, make_namespace):
    logged = make_namespace("eventual").name
    fast = make_namespace("best_effort").name
    lines = set(client.get("/metrics").content.decode().splitlines())
    expected = {
        f'counter_events_ingested_total{{counter_type="eventual",namespace="{logged}"}} 0.0',
        f'counter_events_ingested_total{{counter_type="best_effort",namespace="{fast}"}} 0.0',
        f'counter_rollup_batches_total{{namespace="{logged}"}} 0.0',
        f'counter_rollup_events_total{{namespace="{logged}"}} 0.0',
        f'counter_rollup_batch_seconds_count{{namespace="{logged}"}} 0.0',
        f'counter_rollup_batch_size_count{{namespace="{logged}"}} 0.0',
        f'counter_rollup_failures_total{{namespace="{logged}"}} 0.0',
        f'counter_backpressure_total{{namespace="{logged}"}} 0.0',
        f'counter_checkpoint_drift_total{{namespace="{logged}"}} 0.0',
    }
    assert expected - lines == set()
    assert [line for line in lines if f'namespace="{fast}"' in line and "rollup" in line] == []


def test_declared_series_survive_the_multiprocess_merge(tmp_path):
    script = (
        "from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n"
        "from counterproject import metrics\n"
        "metrics.declare_namespaces([('acc', 'eventual')])\n"
        "registry = CollectorRegistry()\n"
        "multiprocess.MultiProcessCollector(registry)\n"
        "print(generate_latest(registry).decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = output.stdout.splitlines()
    assert 'counter_rollup_failures_total{namespace="acc"} 0.0' in lines
    assert 'counter_checkpoint_drift_total{namespace="acc"} 0.0' in lines
    assert 'counter_events_ingested_total{counter_type="eventual",namespace="acc"} 0.0' in lines


@pytest.mark.django_db
def test_metrics_token_when_set_is_required(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


# --- /readyz and heartbeats ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_web_process(monkeypatch):
    """Each test starts as a web process that has seen no beat heartbeat yet."""
    monkeypatch.setattr(views, "_beat_seen_at", None)


@pytest.mark.django_db
def test_readyz_is_ready_with_a_fresh_beat_heartbeat(client):
    heartbeats.stamp(heartbeats.BEAT)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok", "broker": "ok", "beat": "ok"},
    }


@pytest.mark.django_db
def test_readyz_fails_naming_beat_when_its_heartbeat_is_stale(client, settings):
    heartbeats.stamp(heartbeats.BEAT, at=time.time() - settings.COUNTERS["BEAT_STALE_SECONDS"] - 5)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["beat"].startswith("error: RuntimeError: celery beat's last heartbeat is")
    assert body["checks"]["postgres"] == "ok"


@pytest.mark.django_db
def test_readyz_waits_for_a_first_heartbeat_only_during_the_startup_grace(client, settings):
    settings.COUNTERS = {**settings.COUNTERS, "BEAT_STARTUP_GRACE_SECONDS": 3600}
    assert client.get("/readyz").status_code == 200
    settings.COUNTERS = {**settings.COUNTERS, "BEAT_STARTUP_GRACE_SECONDS": 0}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"] == "error: RuntimeError: no heartbeat from celery beat"


@pytest.mark.django_db
def test_readyz_keeps_a_heartbeat_it_saw_when_redis_loses_the_key(client, settings):
    settings.COUNTERS = {**settings.COUNTERS, "BEAT_STARTUP_GRACE_SECONDS": 0}
    heartbeats.stamp(heartbeats.BEAT)
    assert client.get("/readyz").status_code == 200
    get_redis().flushdb()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["beat"] == "ok"


@pytest.mark.django_db
def test_readyz_judges_a_lost_heartbeat_by_the_same_staleness_limit(client, settings):
    settings.COUNTERS = {**settings.COUNTERS, "BEAT_STARTUP_GRACE_SECONDS": 0, "BEAT_STALE_SECONDS": 60}
    # 29.6 s: the message rounds to whole seconds, so the requests below may take up to 0.9 s.
    heartbeats.stamp(heartbeats.BEAT, at=time.time() - 29.6)
    assert client.get("/readyz").status_code == 200
    get_redis().flushdb()
    settings.COUNTERS = {**settings.COUNTERS, "BEAT_STALE_SECONDS": 10}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert (
        response.json()["checks"]["beat"] == "error: RuntimeError: celery beat's last heartbeat is 30s old (limit 10s)"
    )


def test_beat_stamps_when_it_sends_the_heartbeat_and_a_worker_when_it_runs_it():
    assert heartbeats.age(heartbeats.BEAT) is None
    before_task_publish.send(sender="rollups.heartbeat", body=None, exchange="", routing_key="maintenance")
    assert 0 <= heartbeats.age(heartbeats.BEAT) < 2
    assert heartbeats.age(heartbeats.WORKER) is None
    tasks.heartbeat()
    assert 0 <= heartbeats.age(heartbeats.WORKER) < 2


def test_other_task_publishes_do_not_stamp_beat():
    before_task_publish.send(sender="rollups.drain_queue", body=None, exchange="", routing_key="rollups")
    assert heartbeats.age(heartbeats.BEAT) is None


@pytest.mark.django_db
def test_heartbeat_schedule_is_installed_every_15_seconds_with_expiry():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="rollups.heartbeat")
    assert (task.interval.every, task.interval.period, task.expire_seconds) == (15, "seconds", 10)


# --- gunicorn -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "bind"),
    [
        ({}, "127.0.0.1:8000"),
        ({"WEB_PORT": "9000"}, "127.0.0.1:9000"),
        ({"WEB_HOST": "0.0.0.0", "WEB_PORT": "9000"}, "0.0.0.0:9000"),
        ({"WEB_HOST": "::"}, "[::]:8000"),
    ],
)
def test_gunicorn_binds_to_loopback_unless_web_host_says_otherwise(monkeypatch, env, bind):
    for name in ("WEB_HOST", "WEB_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runpy.run_path(str(ROOT / "counterproject" / "gunicorn_conf.py"))["bind"] == bind


# --- request ids and JSON logs ---------------------------------------------------------------------


@pytest.mark.django_db
def test_request_id_is_echoed_when_given_and_generated_otherwise(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    forged = client.get("/healthz", HTTP_X_REQUEST_ID='x" level="ERROR').headers["X-Request-ID"]
    assert forged != 'x" level="ERROR' and len(forged) == 32


def test_json_log_lines_carry_the_request_id(settings):
    from pythonjsonlogger.json import JsonFormatter

    config = settings.LOGGING["formatters"]["json"]
    formatter = JsonFormatter(config["fmt"], rename_fields=config["rename_fields"])
    record = logging.LogRecord("counters", logging.WARNING, __file__, 1, "backlog %d", (7,), None)
    reset = middleware.request_id.set("req-42")
    try:
        middleware.RequestIdFilter().filter(record)
    finally:
        middleware.request_id.reset(reset)
    line = json.loads(formatter.format(record))
    assert {k: line[k] for k in ("level", "logger", "request_id", "message")} == {
        "level": "WARNING",
        "logger": "counters",
        "request_id": "req-42",
        "message": "backlog 7",
    }


# --- activity series ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_applied_mutations_count_in_this_minute_and_replays_do_not(api, make_namespace):
    namespace = make_namespace("accurate")
    repeated = token()
    for _ in range(3):
        api.post(counter_url(namespace.name, "hits", "add"), {"delta": 1, "idempotency_token": repeated}, format="json")
    api.post(
        f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": [{"counter": "x", "delta": 1}] * 4}, format="json"
    )
    assert activity.series(namespace.name, activity.INGEST, 1) == [(activity.minute() * 60, 5)]
    assert activity.series(activity.ALL, activity.INGEST, 1)[0][1] == 5


@pytest.mark.django_db(transaction=True)
def test_drain_counts_rolled_up_events(api, make_namespace):
    namespace = make_namespace("eventual")
    for delta in (1, 2, 3):
        api.post(counter_url(namespace.name, "c", "add"), {"delta": delta}, format="json")
    index = queues.queue_index("c", namespace.rollup_num_queues)
    get_redis().zadd(queues.queue_key(namespace.name, index), {"c": 0})
    tasks.drain_queue(namespace.name, index)
    assert activity.series(namespace.name, activity.ROLLUP, 1)[0][1] == 3


@pytest.mark.django_db
def test_a_failed_drain_counts_as_a_failed_rollup(make_namespace, monkeypatch):
    namespace = make_namespace("eventual")

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(pipeline, "drain", broken)
    before = sample("counter_rollup_failures_total", namespace=namespace.name)
    with pytest.raises(RuntimeError):
        tasks.drain_queue(namespace.name, 0)
    assert sample("counter_rollup_failures_total", namespace=namespace.name) == before + 1
    assert activity.series(namespace.name, activity.ROLLUP_FAILED, 1)[0][1] == 1


@pytest.mark.django_db
def test_429s_count_per_namespace(api, make_namespace, settings):
    namespace = make_namespace("eventual")
    settings.COUNTERS = {**settings.COUNTERS, "MAX_ROLLUP_BACKLOG": 0}
    queues.trigger(namespace.name, namespace.rollup_num_queues, ["queued"], queues.now_ms())
    response = api.post(counter_url(namespace.name, "c", "add"), {"delta": 1}, format="json")
    assert response.status_code == 429
    assert activity.series(namespace.name, activity.THROTTLED, 1)[0][1] == 1


def test_activity_keys_expire_after_two_hours():
    activity.record("ns", activity.INGEST, 4)
    assert 0 < get_redis().ttl(activity.key("ns", activity.INGEST, activity.minute())) <= 7200
