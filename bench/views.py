"""Reference endpoints of the benchmark; never mounted in production (BENCHMARK_ENDPOINTS).

Both run through the same policy as the API (bearer-key authentication, roles, the error
envelope), so the difference to a real endpoint is exactly the work that endpoint does.
"""

from __future__ import annotations

from django.db import connection
from rest_framework.request import Request
from rest_framework.response import Response

from counters.api.views import ApiView
from counters.exceptions import InvalidRequest, NamespaceNotFound

# Created and dropped by the benchmark itself (bench/stack.py), never by a migration.
ROW_COUNTER_TABLE = "bench_row_counter"


class NoopView(ApiView):
    """The floor: authentication, permission check and JSON rendering, and nothing else."""

    required_roles = {"GET": "read"}

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class RowCounterView(ApiView):
    """The design Netflix rejected: one row per counter, ``UPDATE ... SET value = value + d``.
    Writers of one counter queue on its row lock."""

    required_roles = {"POST": "write"}

    def post(self, request: Request, name: str) -> Response:
        delta = request.data.get("delta") if isinstance(request.data, dict) else None
        if type(delta) is not int:
            raise InvalidRequest("delta must be an integer.", code="invalid_delta")
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ROW_COUNTER_TABLE} SET value = value + %s WHERE name = %s",  # noqa: S608 - constant
                [delta, name],
            )
            if cursor.rowcount != 1:
                raise NamespaceNotFound(f"No row counter {name!r}.", code="not_found")
        return Response({"counter": name, "delta": delta, "applied": True})
