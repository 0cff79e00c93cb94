"""Service endpoints: liveness, readiness, metrics."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from counterproject import metrics
from counterproject.redis_client import get_redis


def healthz(request: HttpRequest) -> JsonResponse:
    """Alive while the process serves requests; touches no dependency."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL, Redis and the Celery broker answer; 503 naming what failed."""
    checks = {}
    for name, probe in (("postgres", _postgres), ("redis", _redis), ("broker", _broker)):
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


def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
