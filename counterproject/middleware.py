"""Request ids and request metrics, outermost in MIDDLEWARE so they see every final response."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from django.db import connection

from counterproject import activity, metrics

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is honoured only if it is short and plain, so it cannot forge log lines.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestIdMiddleware:
    """Honours the caller's ``X-Request-ID`` (or makes one), logs under it and echoes it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        value = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = value
        reset = request_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(reset)
        response[REQUEST_ID_HEADER] = value
        return response


class RequestMetricsMiddleware:
    """Counts requests and times them by URL route name (bounded label values, unlike paths)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        endpoint = (match.view_name or "unnamed") if match else "unmatched"
        metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint, request.method).observe(elapsed)
        # 429s by namespace and minute for the dashboard (back-pressure and rate limits alike);
        # Prometheus has them as counter_http_requests_total{status="429"}.
        if response.status_code == 429 and match and "ns" in match.kwargs:
            activity.record(match.kwargs["ns"], activity.THROTTLED)
        return response


class OperatorPagesReconnectMiddleware:
    """Replaces a dead database connection before an admin or dashboard page uses it.

    There is no per-request health check (settings.py: it cost every API request a round trip);
    API requests reconnect in their key lookup. Operator pages are few, so they pay one
    ``SELECT 1`` instead of failing once per stale connection after PostgreSQL restarts.
    """

    PREFIXES = ("/admin/", "/dashboard/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(self.PREFIXES) and connection.connection is not None:
            if not connection.is_usable():
                connection.close()
        return self.get_response(request)
