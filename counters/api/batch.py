"""Fast validation of mutation bodies: batch items, and the bodies of add and clear.

A batch holds up to ``max_batch_size`` (default 1000) items; DRF serializers cost ~0.5 ms per item
(field deep-copies, nested serializers), which made validation two thirds of a batch request, and
an eighth of a single add's CPU. So mutation bodies are validated here as plain code;
``serializers.AddSerializer``, ``ClearSerializer``, ``BatchSerializer`` and ``BatchItemSerializer``
only describe them in the OpenAPI schema, and tests/test_bad_input.py holds these checks to the
error table of API.md.
"""

from __future__ import annotations

from counters import services
from counters.api.serializers import INT64_MAX, INT64_MIN, parse_time
from counters.exceptions import InvalidRequest
from counters.names import counter_name_problem

_ITEM_FIELDS = frozenset({"counter", "op", "delta", "idempotency_token"})
_ADD_FIELDS = frozenset({"delta", "idempotency_token"})
_CLEAR_FIELDS = frozenset({"idempotency_token"})
_TOKEN_FIELDS = frozenset({"token", "generation_time"})


def _fail(index: int | None, field: str, message: str, code: str) -> InvalidRequest:
    details: dict = {"fields": {field: [message]}}
    if index is not None:
        details["index"] = index
    return InvalidRequest("The request is invalid.", details, code=code)


def _object(index: int | None, body: object, fields: frozenset) -> dict:
    if not isinstance(body, dict):
        raise _fail(index, "non_field_errors", "Must be a JSON object.", "invalid_request")
    unknown = body.keys() - fields
    if unknown:
        raise _fail(index, sorted(unknown)[0], "Unknown field.", "invalid_request")
    return body


def _delta(index: int | None, delta: object) -> int:
    # bool is a subclass of int in Python; JSON true is not a number.
    if type(delta) is not int:
        raise _fail(index, "delta", "Must be a JSON integer.", "invalid_delta")
    if not INT64_MIN <= delta <= INT64_MAX:
        raise _fail(index, "delta", f"Must be between {INT64_MIN} and {INT64_MAX}.", "invalid_delta")
    return delta


def _token(index: int | None, body: dict) -> services.Token | None:
    if "idempotency_token" not in body:
        return None
    raw = body["idempotency_token"]
    if not isinstance(raw, dict) or raw.keys() != _TOKEN_FIELDS:
        raise _fail(index, "idempotency_token", "Must be {token, generation_time}.", "invalid_token")
    value, generated = raw["token"], parse_time(raw["generation_time"])
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise _fail(index, "idempotency_token", "token must be a string of 1 to 255 characters.", "invalid_token")
    # PostgreSQL text cannot hold NUL, nor UTF-8 (PostgreSQL, Redis) a lone surrogate ("\ud800").
    if "\x00" in value or _has_surrogate(value):
        raise _fail(index, "idempotency_token", "token must not contain NUL or lone surrogates.", "invalid_token")
    if generated is None:
        raise _fail(index, "idempotency_token", "generation_time must be RFC 3339 with an offset.", "invalid_token")
    return services.Token(value, generated)


def _has_surrogate(value: str) -> bool:
    return not value.isascii() and any("\ud800" <= char <= "\udfff" for char in value)


def parse_add(body: object) -> tuple[int, services.Token | None]:
    """``delta`` and the body's token of an add (or add-and-get)."""
    body = _object(None, body, _ADD_FIELDS)
    if "delta" not in body:
        raise _fail(None, "delta", "This field is required.", "invalid_delta")
    return _delta(None, body["delta"]), _token(None, body)


def parse_clear(body: object) -> services.Token | None:
    """The body's token of a clear (DRF hands an empty body over as an empty object; JSON null,
    a list or a scalar is not an object)."""
    return _token(None, _object(None, body, _CLEAR_FIELDS))


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
    item = _object(index, item, _ITEM_FIELDS)
    counter = item.get("counter")
    problem = counter_name_problem(counter) if "counter" in item else "required"
    if problem:
        raise _fail(index, "counter", f"Invalid counter name: {problem}.", "invalid_name")
    op = item.get("op", "add")
    if op not in ("add", "clear"):
        raise _fail(index, "op", "Must be 'add' or 'clear'.", "invalid_request")
    delta = item.get("delta")
    if op == "add":
        _delta(index, delta)
    elif "delta" in item and (type(delta) is not int or delta != 0):
        raise _fail(index, "delta", "A clear takes no delta.", "invalid_delta")
    return services.Mutation(counter, op, delta if op == "add" else 0, _token(index, item))
