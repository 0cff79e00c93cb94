"""Errors of the counter domain, each with the HTTP status and machine code of API.md."""

from __future__ import annotations


class CounterError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, details: dict | None = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidRequest(CounterError):
    pass


class NamespaceNotFound(CounterError):
    status = 404
    code = "namespace_not_found"


class NamespaceExists(CounterError):
    status = 409
    code = "namespace_exists"


class NamespaceBeingDeleted(CounterError):
    status = 409
    code = "namespace_being_deleted"


class IdempotencyInProgress(CounterError):
    status = 409
    code = "idempotency_in_progress"


class PayloadTooLarge(CounterError):
    status = 413
    code = "payload_too_large"


class Unprocessable(CounterError):
    """422: ``idempotency_key_reused``, ``generation_time_in_future``, ``idempotency_token_expired``,
    ``count_overflow`` (pass the code)."""

    status = 422


class Backpressure(CounterError):
    status = 429
    code = "backpressure"

    def __init__(self, message: str, retry_after: int, details: dict | None = None):
        super().__init__(message, details)
        self.retry_after = retry_after


class Unavailable(CounterError):
    status = 503
    code = "unavailable"
