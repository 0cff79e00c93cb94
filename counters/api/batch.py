"""Fast validation of batch items.

A batch holds up to ``max_batch_size`` (default 1000) items; DRF serializers cost ~0.5 ms per item
(field deep-copies, nested serializers), which made validation two thirds of a batch request.
So batch bodies are validated here as plain code; ``serializers.BatchSerializer`` and
``BatchItemSerializer`` only describe them in the OpenAPI schema, and tests/test_bad_input.py holds
these checks to the same error table as the single-counter endpoints.
"""

from __future__ import annotations

from counters import services
from counters.api.serializers import INT64_MAX, INT64_MIN, parse_time
from counters.exceptions import InvalidRequest
from counters.names import counter_name_problem

_ITEM_FIELDS = frozenset({"counter", "op", "delta", "idempotency_token"})
_TOKEN_FIELDS = frozenset({"token", "generation_time"})


def _fail(index: int, field: str, message: str, code: str) -> InvalidRequest:
    return InvalidRequest("The request is invalid.", {"fields": {field: [message]}, "index": index}, code=code)


def parse_items(body: object) -> list:
    """The ``mutations`` list of a batch body."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request is invalid.", {"fields": {"non_field_errors": ["Must be a JSON object."]}})
    unknown = body.keys() - {"mutations"}
    if unknown or not isinstance(body.get("mutations"), list):
        field = sorted(unknown)[0] if unknown else "mutations"
        message = "Unknown field." if unknown else "Must be a list of mutations."
        raise InvalidRequest("The request is invalid.", {"fields": {field: [message]}})
    return body["mutations"]


def parse_item(index: int, item: object) -> services.Mutation:
    if not isinstance(item, dict):
        raise _fail(index, "non_field_errors", "Must be a JSON object.", "invalid_request")
    unknown = item.keys() - _ITEM_FIELDS
    if unknown:
        raise _fail(index, sorted(unknown)[0], "Unknown field.", "invalid_request")
    counter = item.get("counter")
    problem = counter_name_problem(counter) if "counter" in item else "required"
    if problem:
        raise _fail(index, "counter", f"Invalid counter name: {problem}.", "invalid_name")
    op = item.get("op", "add")
    if op not in ("add", "clear"):
        raise _fail(index, "op", "Must be 'add' or 'clear'.", "invalid_request")
    delta = item.get("delta")
    if op == "add":
        # bool is a subclass of int in Python; JSON true is not a number.
        if type(delta) is not int:
            raise _fail(index, "delta", "Must be a JSON integer.", "invalid_delta")
        if not INT64_MIN <= delta <= INT64_MAX:
            raise _fail(index, "delta", f"Must be between {INT64_MIN} and {INT64_MAX}.", "invalid_delta")
    elif "delta" in item and (type(delta) is not int or delta != 0):
        raise _fail(index, "delta", "A clear takes no delta.", "invalid_delta")
    token = None
    if "idempotency_token" in item:
        raw = item["idempotency_token"]
        if not isinstance(raw, dict) or raw.keys() != _TOKEN_FIELDS:
            raise _fail(index, "idempotency_token", "Must be {token, generation_time}.", "invalid_token")
        value, generated = raw["token"], parse_time(raw["generation_time"])
        # PostgreSQL text cannot hold NUL; the single-counter serializers refuse it the same way.
        if not isinstance(value, str) or not 1 <= len(value) <= 255 or "\x00" in value:
            raise _fail(index, "idempotency_token", "token must be a string of 1 to 255 characters.", "invalid_token")
        if generated is None:
            raise _fail(index, "idempotency_token", "generation_time must be RFC 3339 with an offset.", "invalid_token")
        token = services.Token(value, generated)
    return services.Mutation(counter, op, delta if op == "add" else 0, token)
