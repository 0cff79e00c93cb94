"""Validation of namespace and counter names (API.md "Names")."""

import re
import unicodedata

NAMESPACE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAMESPACE_RE = re.compile(NAMESPACE_PATTERN)
COUNTER_MAX_LENGTH = 255


def is_valid_namespace(name: object) -> bool:
    return isinstance(name, str) and _NAMESPACE_RE.fullmatch(name) is not None


def counter_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid counter name, or None when it is."""
    if not isinstance(name, str):
        return "must be a string"
    if not 1 <= len(name) <= COUNTER_MAX_LENGTH:
        return f"must be 1 to {COUNTER_MAX_LENGTH} code points"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    for char in name:
        # Cc: control characters, Zs/Zl/Zp: every kind of whitespace; surrogates cannot be stored.
        if char == "/" or char.isspace() or unicodedata.category(char) in ("Cc", "Zs", "Zl", "Zp", "Cs"):
            return f"must not contain {char!r}"
    return None
