"""The JSON error envelope of API.md, for every error on /api/ paths whatever raised it."""

from __future__ import annotations

import json
import logging
import math

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from counters.exceptions import Backpressure, CounterError

logger = logging.getLogger(__name__)

_DRF_CODES = {
    drf.NotAuthenticated: (401, "unauthenticated"),
    drf.AuthenticationFailed: (401, "unauthenticated"),
    drf.PermissionDenied: (403, "forbidden"),
    drf.NotFound: (404, "not_found"),
    drf.MethodNotAllowed: (405, "method_not_allowed"),
    drf.NotAcceptable: (406, "not_acceptable"),
    drf.UnsupportedMediaType: (415, "unsupported_media_type"),
    drf.ParseError: (400, "invalid_request"),
    drf.ValidationError: (400, "invalid_request"),
    drf.Throttled: (429, "rate_limited"),
}

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "internal_error",
    503: "unavailable",
}

UNAVAILABLE_ERRORS = (redis.RedisError, OperationalError, InterfaceError)


def envelope(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error a view raises, as the envelope."""
    headers = {}
    if isinstance(exc, CounterError):
        status, body = exc.status, envelope(exc.code, exc.message, exc.details)
        if isinstance(exc, Backpressure):
            headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, Http404):
        status, body = 404, envelope("not_found", "Not found.")
    elif isinstance(exc, UNAVAILABLE_ERRORS):
        logger.warning("dependency unavailable: %s", exc)
        status, body = 503, envelope("unavailable", "A dependency (PostgreSQL or Redis) is unavailable; retry.")
    elif isinstance(exc, drf.APIException):
        status, code = next(
            (value for cls, value in _DRF_CODES.items() if isinstance(exc, cls)),
            (exc.status_code, _STATUS_CODES.get(exc.status_code, "error")),
        )
        details = exc.detail if isinstance(exc, drf.ValidationError) else {}
        if isinstance(details, list):
            details = {"errors": details}
        message = str(exc.detail) if not isinstance(exc, drf.ValidationError) else "The request is invalid."
        if isinstance(exc, drf.Throttled):
            retry_after = max(1, math.ceil(exc.wait or 0))
            headers["Retry-After"] = str(retry_after)
            message, details = "Too many requests for this API key; retry later.", {"retry_after": retry_after}
        body = envelope(code, message, details)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
    else:
        return None
    return Response(body, status=status, headers=headers)


class ApiErrorMiddleware:
    """Wraps what DRF never sees on /api/ paths (unknown URLs, Django's 404/405/500, bodies over
    the size limit, uncaught exceptions) in the same envelope."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            code = _STATUS_CODES.get(response.status_code, "error")
            replacement = JsonResponse(envelope(code, response.reason_phrase or code), status=response.status_code)
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, RequestDataTooBig):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return JsonResponse(
                envelope("payload_too_large", f"The body is larger than {limit} bytes.", {"limit": limit}), status=413
            )
        if isinstance(exception, UNAVAILABLE_ERRORS):
            logger.warning("dependency unavailable: %s", exception)
            return JsonResponse(envelope("unavailable", "A dependency is unavailable; retry."), status=503)
        if isinstance(exception, json.JSONDecodeError):
            return JsonResponse(envelope("invalid_request", "The body is not valid JSON."), status=400)
        logger.exception("unhandled error on %s", request.path)
        return JsonResponse(envelope("internal_error", "Internal server error."), status=500)
