"""Statements PREPAREd once per database connection.

The write statement and the accurate read are CTEs whose planning cost as much PostgreSQL CPU as
running them (the write: 0.55 -> 0.25 ms with psycopg2 against the same server). psycopg2 has no
automatic preparation, so ``statement`` PREPAREs on first use per connection and returns the
EXECUTE to send instead. COUNTER_PREPARED_STATEMENTS=false (PgBouncer in transaction mode, which
moves sessions between server connections) sends the plain SQL.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection


def statement(name: str, sql: str, parameters: dict[str, str]) -> str:
    """SQL for ``cursor.execute(..., params)`` that runs ``sql``, whose ``%(name)s`` placeholders
    are ``parameters`` (name -> PostgreSQL type, in order)."""
    if not settings.COUNTERS["PREPARED_STATEMENTS"]:
        return sql
    connection.ensure_connection()
    state = getattr(connection, "counters_prepared", None)
    if state is None or state[0] is not connection.connection:
        # A new connection: it has prepared nothing of ours yet (DEALLOCATE in case a previous
        # wrapper state was lost while the session lived on).
        state = (connection.connection, set())
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        connection.counters_prepared = state
    if name not in state[1]:
        body = sql
        for number, parameter in enumerate(parameters, start=1):
            body = body.replace(f"%({parameter})s", f"${number}")
        with connection.cursor() as cursor:
            cursor.execute(f"PREPARE {name} ({', '.join(parameters.values())}) AS {body}")
        state[1].add(name)
    return f"EXECUTE {name}(" + ", ".join(f"%({parameter})s" for parameter in parameters) + ")"
