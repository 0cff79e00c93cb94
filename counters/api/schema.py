"""The OpenAPI description of API policy: the bearer-key scheme and, on every operation, the error
responses that the policy (auth, roles, throttling, parsing, the error envelope) can produce.

Views declare their success bodies with ``extend_schema``; the errors are derived here from what a
view is (its path, method and required role), so a new view is documented as strictly as it is
guarded.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from counters.api.errors import envelope
from counters.api.serializers import ErrorSerializer

_ERRORS = {
    400: (
        "Malformed JSON, wrong types, out-of-range values or bad names.",
        ["invalid_request", "invalid_delta", "invalid_name", "invalid_token"],
    ),
    401: ("Missing, unknown or revoked API key.", ["unauthenticated"]),
    403: ("The key's role does not allow this operation.", ["forbidden"]),
    404: ("Unknown namespace, or one outside the key's scope.", ["namespace_not_found"]),
    409: ("A conflicting request.", []),
    413: ("Body over the size limit, or a batch over max_batch_size.", ["payload_too_large"]),
    415: ("The body is not application/json.", ["unsupported_media_type"]),
    422: (
        "A semantically impossible request.",
        ["idempotency_key_reused", "generation_time_in_future", "idempotency_token_expired", "count_overflow"],
    ),
    429: ("Too many requests; nothing was applied. Retry after `Retry-After` seconds.", ["rate_limited"]),
    503: ("PostgreSQL or Redis is unavailable; nothing was applied.", ["unavailable"]),
}

_MESSAGES = {
    "invalid_request": ("The request is invalid.", {"fields": {"extra": ["Unknown field."]}}),
    "invalid_delta": ("The request is invalid.", {"fields": {"delta": ["Must be a JSON integer."]}}),
    "invalid_name": ("Invalid counter name: must not contain '/'.", {"counter": "a/b"}),
    "invalid_token": (
        "The request is invalid.",
        {"fields": {"idempotency_token": {"generation_time": ["Must be an RFC 3339 time with an explicit offset."]}}},
    ),
    "unauthenticated": ("Unknown or revoked API key.", {}),
    "forbidden": ("This API key's role does not allow this operation.", {}),
    "namespace_not_found": ("No namespace 'orders'.", {}),
    "namespace_exists": ("A namespace with this name exists.", {"name": "orders"}),
    "idempotency_in_progress": ("This token is being applied by a concurrent request; retry.", {}),
    "payload_too_large": ("A batch holds at most 1000 mutations.", {"max_batch_size": 1000, "size": 1001}),
    "unsupported_media_type": ('Unsupported media type "text/plain" in request.', {}),
    "idempotency_key_reused": ("This idempotency token was used with another operation or delta.", {}),
    "generation_time_in_future": ("generation_time is in the future.", {}),
    "idempotency_token_expired": ("generation_time is older than the namespace's idempotency window.", {}),
    "count_overflow": ("The add would take the count outside int64.", {}),
    "rate_limited": ("Too many requests for this API key; retry later.", {"retry_after": 1}),
    "backpressure": ("The service is shedding load; retry later.", {"retry_after": 2}),
    "unavailable": ("A dependency (PostgreSQL or Redis) is unavailable; retry.", {}),
}


def error_statuses(path: str, method: str, role: str | None) -> dict[int, list[str]]:
    """The error statuses (with their codes) an operation can answer, from what the view is."""
    statuses = {401: [], 403: [], 429: [], 503: []}
    if "{ns}" in path:
        statuses[404] = []
    # Query parameters (listings), a counter name in the path or a body can each be invalid.
    if method in ("POST", "PATCH") or "{name}" in path or (method == "GET" and not path.endswith("}")):
        statuses[400] = []
    if method in ("POST", "PATCH"):
        statuses |= {413: [], 415: []}
    if method == "POST" and role == "write":
        statuses |= {409: ["idempotency_in_progress"], 422: []}
        statuses[429] = ["rate_limited", "backpressure"]
    if method == "POST" and role == "admin":
        statuses[409] = ["namespace_exists"]
    return {status: codes or _ERRORS[status][1] for status, codes in sorted(statuses.items())}


class CounterAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses of ``error_statuses``."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if not self.path.startswith("/api/v1/"):
            return responses
        error_ref = self.resolve_serializer(ErrorSerializer, direction).ref
        role = getattr(self.view, "required_roles", {}).get(self.method)
        for status, codes in error_statuses(self.path, self.method, role).items():
            response = {
                "description": _ERRORS[status][0],
                "content": {
                    "application/json": {
                        "schema": error_ref,
                        "examples": {
                            code: {"summary": code, "value": envelope(code, *_MESSAGES[code])} for code in codes
                        },
                    }
                },
            }
            if status == 401:
                response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
            if status == 429:
                response["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
                }
            responses.setdefault(str(status), response)
        return responses


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "counters.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <api-key>`; keys come from `manage.py createapikey`.",
        }
