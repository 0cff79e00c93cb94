"""Service endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import hmac
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from counterproject import heartbeats, metrics
from counterproject.redis_client import get_redis

# A freshly started stack has no beat heartbeat yet; readiness waits this long for the first one.
_STARTED = time.monotonic()
# The newest beat stamp this process has read (unix seconds). Redis can lose the stamp while beat
# lives (FLUSHALL, failover to an empty replica) until beat's next one, up to 15 s later; meanwhile
# the remembered stamp is judged by the same limit, so a dead beat still fails within the limit.
_beat_seen_at: float | None = None


def healthz(request: HttpRequest) -> JsonResponse:
    """Alive while the process serves requests; touches no dependency."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL, Redis and the Celery broker answer and Celery beat's heartbeat is fresh
    (in Redis, or as this process last saw it when Redis lost it); 503 naming what failed."""
    checks = {}
    for name, probe in (("postgres", _postgres), ("redis", _redis), ("broker", _broker), ("beat", _beat)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as error:  # noqa: BLE001 - any failure means "not ready", reported by name
            checks[name] = f"error: {type(error).__name__}: {error}"[:300]
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def _postgres() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    get_redis().ping()


def _broker() -> None:
    from counterproject.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _beat() -> None:
    global _beat_seen_at
    limit = settings.COUNTERS["BEAT_STALE_SECONDS"]
    now = time.time()
    age = heartbeats.age(heartbeats.BEAT)
    if age is not None:
        _beat_seen_at = now - age
    elif _beat_seen_at is not None:
        age = max(0.0, now - _beat_seen_at)
    if age is None:
        if time.monotonic() - _STARTED < settings.COUNTERS["BEAT_STARTUP_GRACE_SECONDS"]:
            return
        raise RuntimeError("no heartbeat from celery beat")
    if age > limit:
        raise RuntimeError(f"celery beat's last heartbeat is {age:.0f}s old (limit {limit}s)")


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text; with METRICS_TOKEN set, only for ``Authorization: Bearer <token>``."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = HttpResponse("metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
