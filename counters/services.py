"""Write paths of the counter service: mutations and namespace management."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction

from counterproject import activity, metrics
from counterproject.redis_client import get_redis
from counters import besteffort, partitions, prepared
from counters.exceptions import (
    IdempotencyInProgress,
    NamespaceBeingDeleted,
    NamespaceExists,
    NamespaceNotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
)
from counters.models import EventKind, IdempotencyToken, Namespace
from rollups import backpressure, cache, pipeline, queues, tails

logger = logging.getLogger(__name__)

# Clients' clocks may run a little ahead of ours.
FUTURE_TOLERANCE = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Token:
    value: str
    generation_time: dt.datetime


@dataclass(frozen=True)
class Mutation:
    counter: str
    op: str  # "add" or "clear"
    delta: int
    token: Token | None


@dataclass(frozen=True)
class Outcome:
    """What one mutation did: ``applied`` is False for a replay, whose ``status`` and ``body`` are
    those of the first response."""

    counter: str
    applied: bool
    status: int
    body: dict


def response_body(operation: str, namespace: str, mutation: Mutation, count: int | None) -> dict:
    """The 200 body of a mutation. ``_WRITE`` stores the same body with its token, for replays
    (built there with jsonb_build_object; tests/test_idempotency.py holds them equal)."""
    if operation == "batch":
        return {"counter": mutation.counter, "applied": True}
    if operation == "clear":
        return {"namespace": namespace, "counter": mutation.counter, "count": 0, "applied": True}
    body = {"namespace": namespace, "counter": mutation.counter, "delta": mutation.delta, "applied": True}
    if operation == "add_and_get":
        body["count"] = count
    return body


def token_operation(operation: str, mutation: Mutation) -> str:
    # A batch item is the same operation as the single call: retrying a single add inside a
    # batch (or the reverse) with the same token is a replay, not a reuse.
    return mutation.op if operation == "batch" else operation


def check_token_times(namespace: Namespace, mutations: list[Mutation], operation: str, now: dt.datetime) -> None:
    for index, mutation in enumerate(mutations):
        if mutation.token is None:
            continue
        # Like every other batch error, name the item, also in a batch of one.
        details = {"index": index} if operation == "batch" else {}
        if mutation.token.generation_time > now + FUTURE_TOLERANCE:
            raise Unprocessable("generation_time is in the future.", details, code="generation_time_in_future")
        if mutation.token.generation_time < now - dt.timedelta(seconds=namespace.idempotency_window_seconds):
            raise Unprocessable(
                "generation_time is older than the namespace's idempotency window.",
                details,
                code="idempotency_token_expired",
            )


def mutate(namespace: Namespace, mutations: list[Mutation], operation: str) -> list[Outcome]:
    """Apply mutations in order, all or none; replays of known tokens apply nothing.

    ``operation`` is "add", "add_and_get", "clear" (one mutation) or "batch". Durable on return
    for eventual/accurate namespaces (one PostgreSQL transaction, synchronous commit); atomic in
    Redis for best_effort.
    """
    if len(mutations) > namespace.max_batch_size:
        raise PayloadTooLarge(
            f"A batch holds at most {namespace.max_batch_size} mutations.",
            {"max_batch_size": namespace.max_batch_size, "size": len(mutations)},
        )
    check_token_times(namespace, mutations, operation, dt.datetime.now(dt.UTC))
    if not namespace.uses_event_log:
        return _reported(namespace, _mutate_best_effort(namespace, mutations, operation))
    backpressure.check(namespace)
    started = time.monotonic()
    try:
        outcomes = _mutate_logged(namespace, mutations, operation)
    except IntegrityError as error:
        if "no partition of relation" not in str(error):
            raise
        # The partition task normally runs days ahead; never fail a write for want of one.
        partitions.ensure_partitions_around_now(settings.COUNTERS["PARTITION_DAYS_AHEAD"])
        outcomes = _mutate_logged(namespace, mutations, operation)
    finally:
        # Slow failures (statement timeouts) are the clearest sign of saturation: they count too.
        backpressure.record_write(time.monotonic() - started)
    return _reported(namespace, outcomes)


def _reported(namespace: Namespace, outcomes: list[Outcome]) -> list[Outcome]:
    """Once the mutations are committed (Redis script or PostgreSQL transaction returned): metrics,
    the dashboard's activity and, for the event log, the rollup triggers, in one Redis round trip.

    The write is acknowledged by then; a lost trigger only delays a rollup until the stale sweep
    finds the counter, so a Redis failure here must not fail the request."""
    applied = [outcome.counter for outcome in outcomes if outcome.applied]
    if not applied:
        return outcomes
    metrics.EVENTS.labels(namespace.name, namespace.counter_type).inc(len(applied))
    try:
        pipe = get_redis().pipeline(transaction=False)
        if namespace.uses_event_log:
            pipeline.trigger_after_write(namespace, sorted(set(applied)), pipe)
        activity.record(namespace.name, activity.INGEST, len(applied), pipe)
        pipe.execute()
    except redis.RedisError as error:
        logger.warning("triggers/activity of %d mutations of %s lost: %s", len(applied), namespace.name, error)
    return outcomes


def _mutate_best_effort(namespace: Namespace, mutations: list[Mutation], operation: str) -> list[Outcome]:
    try:
        applied = besteffort.apply(
            namespace.name,
            namespace.ttl_seconds,
            namespace.idempotency_window_seconds,
            [(token_operation(operation, m), m.counter, m.delta, m.token.value if m.token else "") for m in mutations],
        )
    except besteffort.Rejected as rejected:
        details = {"index": rejected.index} if operation == "batch" else {}
        if rejected.reason == "overflow":
            raise Unprocessable("The add would take the count outside int64.", details, code="count_overflow") from None
        raise _reused(details) from None
    except redis.RedisError as error:
        raise Unavailable("Redis is unavailable.") from error
    return [
        Outcome(m.counter, a.applied, 200, response_body(operation, namespace.name, m, a.count))
        for m, a in zip(mutations, applied)
    ]


def _reused(details: dict) -> Unprocessable:
    return Unprocessable(
        "This idempotency token was used with another operation or delta.", details, code="idempotency_key_reused"
    )


# One statement claims the request's tokens and appends its events. An event is appended when its
# mutation has no token, or when it is the first occurrence of its token in the request and that
# token was new (claimed): a replay appends nothing. The namespace is re-checked in the same
# snapshot, so a write that races a committed namespace DELETE appends nothing either.
#
# Sent with its SET LOCALs as one query string outside a transaction block, the statement is its
# own transaction: one round trip, durable when it returns (synchronous commit). ``at_once`` makes
# it fail instead (counters_require, SQLSTATE CR001: nothing applied) when a token was not claimed:
# telling a replay from a reuse, which must abort the whole request, then needs a transaction that
# is still open, so such requests are redone in one (``_write``, ``at_once`` false).
_WRITE = """
WITH live AS (
    SELECT 1 FROM counters_namespace WHERE name = %(namespace)s
),
items AS (
    SELECT i.position, i.item->>0 AS counter, (i.item->>1)::smallint AS kind, (i.item->>2)::bigint AS delta,
           i.item->>3 AS token, (i.item->>4)::boolean AS first, i.item->>5 AS token_operation
    FROM json_array_elements(%(items)s::json) WITH ORDINALITY AS i(item, position)
),
claimed AS (
    INSERT INTO counters_idempotencytoken
        (namespace, counter, token, operation, delta, response_status, response_body, created_at)
    SELECT %(namespace)s, t.counter, t.token, t.token_operation, t.delta, 200,
           CASE %(operation)s
               WHEN 'batch' THEN jsonb_build_object('counter', t.counter, 'applied', true)
               WHEN 'clear' THEN jsonb_build_object('namespace', %(namespace)s, 'counter', t.counter, 'count', 0,
                                                    'applied', true)
               ELSE jsonb_build_object('namespace', %(namespace)s, 'counter', t.counter, 'delta', t.delta,
                                       'applied', true)
           END,
           now()
    FROM items t
    WHERE t.token IS NOT NULL AND EXISTS (SELECT 1 FROM live)
    ON CONFLICT (namespace, counter, token) DO NOTHING
    RETURNING counter, token
),
appended AS (
    INSERT INTO counters_event (namespace, counter, kind, delta, event_time)
    SELECT %(namespace)s, e.counter, e.kind, e.delta, now()
    FROM items e
    WHERE EXISTS (SELECT 1 FROM live)
      AND (e.token IS NULL
           OR (e.first AND EXISTS (SELECT 1 FROM claimed c WHERE c.counter = e.counter AND c.token = e.token)))
    ORDER BY e.position
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM live), (SELECT count(*) FROM appended),
       COALESCE(array_agg(claimed.counter), '{}'), COALESCE(array_agg(claimed.token), '{}'),
       counters_require(NOT %(at_once)s OR NOT EXISTS (SELECT 1 FROM live) OR count(claimed.token) = %(tokened)s,
                        'a token of this request was already used')
FROM claimed
"""
_TIMEOUTS = "SET LOCAL statement_timeout = %(statement_ms)s; SET LOCAL lock_timeout = %(lock_ms)s; "
# The request travels as one JSON array of [counter, kind, delta, token, first, token operation]
# items: adapting ten parallel arrays of a 500-item batch cost psycopg2 3 ms, one JSON text 0.3 ms.
_WRITE_PARAMETERS = {
    "namespace": "text",
    "items": "json",
    "operation": "text",
    "at_once": "boolean",
    "tokened": "bigint",
}


def _prepared_write() -> str:
    return prepared.statement("counters_write", _WRITE, _WRITE_PARAMETERS)


class _NotAtOnce(Exception):
    """The one-statement write met a known token and applied nothing; redo it in a transaction."""


def _mutate_logged(namespace: Namespace, mutations: list[Mutation], operation: str) -> list[Outcome]:
    bodies = [response_body(operation, namespace.name, m, None) for m in mutations]
    seen: set[tuple[str, str]] = set()
    firsts = []
    for m in mutations:
        key = (m.counter, m.token.value) if m.token else None
        firsts.append(key is not None and key not in seen)
        if key:
            seen.add(key)
    tokened = sum(m.token is not None for m in mutations)
    items = [
        [
            m.counter,
            EventKind.CLEAR if m.op == "clear" else EventKind.ADD,
            0 if m.op == "clear" else m.delta,
            m.token.value if m.token else None,
            first,
            token_operation(operation, m),
        ]
        for m, first in zip(mutations, firsts)
    ]
    params = {
        "statement_ms": settings.COUNTERS["WRITE_STATEMENT_TIMEOUT_MS"],
        "lock_ms": settings.COUNTERS["TOKEN_LOCK_TIMEOUT_MS"],
        "namespace": namespace.name,
        "items": json.dumps(items),
        "operation": operation,
        "tokened": tokened,
    }
    try:
        # add_and_get reads its count inside the write's transaction, so it always takes one.
        if operation != "add_and_get" and not connection.in_atomic_block:
            try:
                return _write_at_once(namespace, mutations, params, bodies)
            except _NotAtOnce:
                pass
        return _write(namespace, mutations, operation, params, firsts, bodies)
    except OperationalError as error:
        code = getattr(error.__cause__, "pgcode", None)
        # 55P03 lock_not_available: another request holds this token; 40P01 deadlock between two
        # batches claiming the same tokens in different orders. Either way: nothing applied, retry.
        if code in ("55P03", "40P01"):
            raise IdempotencyInProgress("The same token is being applied by a concurrent request; retry.") from error
        raise Unavailable("PostgreSQL is unavailable.") from error


def _write_at_once(namespace: Namespace, mutations: list[Mutation], params: dict, bodies: list[dict]) -> list[Outcome]:
    """The common case in one round trip: every token new (or none), so every mutation applies."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_TIMEOUTS + _prepared_write(), params | {"at_once": True})
            live = cursor.fetchone()[0]
    except DatabaseError as error:
        if getattr(error.__cause__, "pgcode", None) == "CR001":
            raise _NotAtOnce from None
        raise
    if not live:
        raise NamespaceNotFound(f"No namespace {namespace.name!r}.")
    return [Outcome(m.counter, True, 200, body) for m, body in zip(mutations, bodies)]


def _write(namespace, mutations, operation, params, firsts, bodies) -> list[Outcome]:
    """Any write in an explicit transaction: replays answer with their first response, a reused
    token rolls the whole request back, add_and_get reads its count before committing."""
    statuses = [200] * len(mutations)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_TIMEOUTS + _prepared_write(), params | {"at_once": False})
        live, _, claimed_counters, claimed_tokens, _ = cursor.fetchone()
        if not live:
            raise NamespaceNotFound(f"No namespace {namespace.name!r}.")
        claimed = set(zip(claimed_counters, claimed_tokens))
        fresh = [
            m.token is None or (first and (m.counter, m.token.value) in claimed) for m, first in zip(mutations, firsts)
        ]
        if len(claimed) < params["tokened"]:
            _replays(namespace, mutations, operation, fresh, statuses, bodies)
        if operation == "add_and_get" and fresh[0]:
            bodies[0]["count"] = pipeline.live_counts(namespace, [mutations[0].counter]).counts[mutations[0].counter]
            if mutations[0].token is not None:
                IdempotencyToken.objects.filter(
                    namespace=namespace.name, counter=mutations[0].counter, token=mutations[0].token.value
                ).update(response_body=bodies[0])
    return [Outcome(m.counter, f, s, b) for m, f, s, b in zip(mutations, fresh, statuses, bodies)]


def _replays(namespace, mutations, operation, fresh, statuses, bodies) -> None:
    """For every tokened mutation that appended nothing: a replay when its token was used with the
    same operation and delta (answer with the first response), otherwise a reuse, which aborts the
    whole request (the transaction rolls back what the statement appended)."""
    tokened = [i for i, m in enumerate(mutations) if m.token is not None and not fresh[i]]
    known = {
        (row.counter, row.token): row
        for row in IdempotencyToken.objects.filter(
            namespace=namespace.name,
            counter__in={mutations[i].counter for i in tokened},
            token__in={mutations[i].token.value for i in tokened},
        )
    }
    for i in tokened:
        mutation = mutations[i]
        row = known[(mutation.counter, mutation.token.value)]
        delta = mutation.delta if mutation.op == "add" else 0
        if row.operation != token_operation(operation, mutation) or row.delta != delta:
            raise _reused({"index": i} if operation == "batch" else {})
        statuses[i] = row.response_status
        bodies[i] = {"counter": mutation.counter, "applied": False} if operation == "batch" else row.response_body


# Write transactions last milliseconds (statement_timeout bounds each statement); a transaction
# still open after this long is not a writer of ours, and the delete goes ahead without it.
DELETE_WAIT_SECONDS = 10.0


def _wait_for_older_transactions() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        deleted_at = cursor.fetchone()[0]
    deadline = time.monotonic() + DELETE_WAIT_SECONDS
    while pipeline.closed_until(0) < deleted_at:
        if time.monotonic() > deadline:
            logger.warning("namespace delete went ahead past a transaction open for %ss", DELETE_WAIT_SECONDS)
            return
        time.sleep(0.05)


# Advisory-lock class of "this namespace name is being deleted" (the name's hash is the other key).
NAME_LOCK_CLASS = 7_215_002


@contextmanager
def _name_lock(name: str, *, wait: bool):
    """A session-level advisory lock on a namespace name, held across several transactions.

    Deleting a namespace takes it for the whole purge; creating one only tries it. Data is keyed
    by name, so without it a namespace re-created while the old one's purge still runs would have
    its new events, checkpoints and queued rollups deleted by that purge (a client whose DELETE
    timed out retries, gets 404 and re-creates at once).
    """
    with connection.cursor() as cursor:
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        cursor.execute(f"SELECT {function}(%s, hashtext(%s))", [NAME_LOCK_CLASS, name])
        held = True if wait else cursor.fetchone()[0]
        try:
            yield held
        finally:
            if held:
                cursor.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [NAME_LOCK_CLASS, name])


def create_namespace(fields: dict) -> Namespace:
    """Create a namespace; 409 while a namespace of that name is still being purged.

    Leftovers of a purge that died half-way (a killed web process) are purged first, so a new
    namespace never inherits events, checkpoints or tokens of an old one.
    """
    with _name_lock(fields["name"], wait=False) as held:
        if not held:
            raise NamespaceBeingDeleted(
                "A namespace of this name is still being deleted; retry in a moment.", {"name": fields["name"]}
            )
        if Namespace.objects.filter(name=fields["name"]).exists():
            raise NamespaceExists("A namespace with this name exists.", {"name": fields["name"]})
        # Data under a name with no namespace row is what a dead purge left; never a live namespace's.
        if _has_leftovers(fields["name"]):
            _purge(fields["name"])
        try:
            with transaction.atomic():
                return Namespace.objects.create(**fields)
        except IntegrityError:
            raise NamespaceExists("A namespace with this name exists.", {"name": fields["name"]}) from None


def delete_namespace(namespace: Namespace) -> None:
    """Remove a namespace with every event, token, checkpoint, cached value and queued rollup.

    The row goes first, so writers see 404 at once; write transactions that began before it and
    may still commit events are waited for (up to ``DELETE_WAIT_SECONDS``); the data then goes in
    bounded batches while the name stays locked against re-creation (``_name_lock``).
    """
    with _name_lock(namespace.name, wait=True):
        namespace.delete()
        _wait_for_older_transactions()
        _purge(namespace.name)


def _has_leftovers(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM counters_event WHERE namespace = %(name)s)"
            " OR EXISTS (SELECT 1 FROM counters_idempotencytoken WHERE namespace = %(name)s)"
            " OR EXISTS (SELECT 1 FROM rollups_checkpoint WHERE namespace = %(name)s)",
            {"name": name},
        )
        return cursor.fetchone()[0]


def _purge(name: str, chunk: int = 5000) -> None:
    """Delete everything stored under a namespace name that has no namespace row: events and tokens
    in bounded, id-ordered batches each in its own transaction, then checkpoints, sweep state and
    Redis keys."""
    from rollups.models import Checkpoint, SweepState

    with connection.cursor() as cursor:
        for table in ("counters_event", "counters_idempotencytoken"):
            while True:
                cursor.execute(
                    f"DELETE FROM {table} WHERE id IN "  # noqa: S608 - table names are constants
                    f"(SELECT id FROM {table} WHERE namespace = %s ORDER BY id LIMIT %s)",
                    [name, chunk],
                )
                if cursor.rowcount < chunk:
                    break
    Checkpoint.objects.filter(namespace=name).delete()
    SweepState.objects.filter(namespace=name).delete()
    try:
        queues.purge(name)
        pipeline.purge(name)
        cache.purge(name)
        tails.purge(name)
        besteffort.purge(name)
    except redis.RedisError as error:
        raise Unavailable("Redis is unavailable; the namespace is gone but its cache may linger.") from error
