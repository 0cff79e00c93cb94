import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from counters.exceptions import PayloadTooLarge

# No field takes an integer beyond int64: "-9223372036854775808" is 20 characters. Longer literals
# stay text, so a 5,000-digit number is an invalid value rather than a costly (or, past Python's
# 4,300-digit conversion limit, failing) int().
INT_LITERAL_MAX_LENGTH = 20


class NonFinite:
    """Stands for a NaN or Infinity literal or an integer too long for any field, so validation can
    call it an invalid number rather than the parser calling the whole body malformed. It is neither
    a number nor a string, so no field (and no hand-written check) can take it for a valid value."""

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def parse_int(literal: str) -> int | NonFinite:
    return int(literal) if len(literal) <= INT_LITERAL_MAX_LENGTH else NonFinite(literal)


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all distinct: with a repeated key, which value counts would be a
    guess (Python keeps the last, other parsers the first)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ParseError(f"The body repeats the key {key[:64]!r} in one object.")
            seen.add(key)
    return obj


class StrictJSONParser(JSONParser):
    """JSON bodies up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes.

    DRF reads the request stream directly, which skips Django's own body-size check, so the limit
    is enforced here, against both the declared length and the bytes actually read.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = parser_context["request"] if parser_context else None
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.", {"limit": limit})
        try:
            return json.loads(
                raw.decode("utf-8"), parse_constant=NonFinite, parse_int=parse_int, object_pairs_hook=unique_keys
            )
        # Messages of our own: a client learns where its JSON broke, never how Python parses it.
        except UnicodeDecodeError:
            raise ParseError("The body is not UTF-8 text.") from None
        except json.JSONDecodeError as error:
            raise ParseError(
                f"The body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
            ) from None
        except ValueError:
            raise ParseError("The body is not valid JSON.") from None
        except RecursionError:
            raise ParseError("The body is nested too deeply.") from None
