"""The rollup pipeline's defences, one at a time, against the real PostgreSQL and Redis:
adaptive batches, back-pressure, stale sweeps, retention, lease handoff, audits and live
reconfiguration. tests/faults/ checks the same promises with real processes and injected faults."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection
from django.test import override_settings

from counterproject import metrics
from counterproject.redis_client import get_redis
from counters import partitions
from counters.models import Event, IdempotencyToken
from rollups import audit, backpressure, cache, pipeline, queues, retention
from rollups.models import Checkpoint, SweepState
from tests.conftest import counter_url, token

COUNTERS_OVERRIDE = {"BATCH_SIZE_MIN": 4, "BATCH_SIZE_MAX": 64, "BATCH_TARGET_SECONDS": 0.2}


def knobs(**values):
    from django.conf import settings

    return override_settings(COUNTERS={**settings.COUNTERS, **values})


def add(api, namespace, counter, delta):
    response = api.post(
        counter_url(namespace.name, counter, "add"), {"delta": delta, "idempotency_token": token()}, format="json"
    )
    assert response.status_code == 200, response.content
    return response


def drain_everything(namespace) -> None:
    for index in queues.due_queues(namespace.name):
        pipeline.drain(namespace, index)


def checkpoint_counts(namespace) -> dict[str, int]:
    return {c.counter: int(c.last_rollup_count) for c in Checkpoint.objects.filter(namespace=namespace.name)}


def event_count(namespace) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM counters_event WHERE namespace = %s", [namespace.name])
        return cursor.fetchone()[0]


# -- dynamic batching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "claimed", "elapsed", "expected"),
    [
        (8, 8, 0.01, 16),  # full and fast: grow
        (8, 5, 0.01, 8),  # fast but not full: the queue ran dry, no reason to grow
        (8, 8, 0.15, 8),  # full, between half the target and the target: hold
        (16, 16, 0.5, 8),  # slow: halve
        (64, 64, 0.01, 64),  # never above BATCH_SIZE_MAX
        (4, 4, 5.0, 4),  # never below BATCH_SIZE_MIN
    ],
)
def test_batch_size_grows_when_fast_and_full_and_shrinks_when_slow_within_bounds(size, claimed, elapsed, expected):
    with knobs(**COUNTERS_OVERRIDE):
        assert pipeline.adapt_batch_size(size, claimed, elapsed) == expected


@pytest.mark.django_db(transaction=True)
def test_drain_learns_a_batch_size_and_restarts_from_a_new_configured_one(api, make_namespace):
    namespace = make_namespace(rollup_num_queues=1, rollup_batch_size=4)
    queues.trigger(namespace.name, 1, [f"c{i}" for i in range(61)], queues.now_ms())
    # A generous latency target: every batch counts as fast however loaded the machine is.
    with knobs(**{**COUNTERS_OVERRIDE, "BATCH_TARGET_SECONDS": 60.0}, PACING_FACTOR=0.0):
        assert pipeline.drain(namespace, 0).batch_size == 64
        namespace.rollup_batch_size = 16
        namespace.save()
        queues.trigger(namespace.name, 1, ["x"], queues.now_ms())
        # The learned 64 grew from 4; the operator's new 16 wins, and one counter does not grow it.
        assert pipeline.drain(namespace, 0).batch_size == 16


# -- back-pressure ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_backlog_over_the_limit_answers_429_with_retry_after_and_applies_nothing(api, make_namespace):
    namespace = make_namespace()
    queues.trigger(namespace.name, namespace.rollup_num_queues, [f"q{i}" for i in range(6)], queues.now_ms() + 60_000)
    with knobs(MAX_ROLLUP_BACKLOG=5):
        response = api.post(counter_url(namespace.name, "c", "add"), {"delta": 3}, format="json")
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "backpressure"
    assert response.json()["error"]["details"] == {"reason": "rollup_backlog", "backlog": 6, "limit": 5}
    assert event_count(namespace) == 0


@pytest.mark.django_db(transaction=True)
def test_slow_writes_answer_429_and_the_latency_signal_decays(api, make_namespace):
    namespace = make_namespace()
    backpressure.record_write(3.0)
    with knobs(MAX_WRITE_LATENCY_MS=1000, WRITE_LATENCY_HALF_LIFE_SECONDS=0.1):
        response = api.post(counter_url(namespace.name, "c", "add"), {"delta": 3}, format="json")
        assert response.status_code == 429
        assert response["Retry-After"] == "1"
        assert response.json()["error"]["details"]["reason"] == "write_latency"
        assert event_count(namespace) == 0
        # Ten half-lives later the 3 s sample weighs 3 ms: writes are accepted again.
        time.sleep(1.0)
        add(api, namespace, "c", 3)
    assert event_count(namespace) == 1


def test_write_latency_is_an_exponential_average_of_samples():
    with knobs(WRITE_LATENCY_HALF_LIFE_SECONDS=3600.0):
        backpressure.record_write(1.0)
        backpressure.record_write(0.0)
        assert backpressure.write_latency() == pytest.approx(0.8, rel=1e-3)


@pytest.mark.django_db(transaction=True)
def test_redis_down_does_not_block_writes_through_the_backlog_check(make_namespace, monkeypatch):
    import redis

    namespace = make_namespace()

    def unreachable(name):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(queues, "depths", unreachable)
    assert backpressure.backlog(namespace.name) == 0


# -- stale sweeps ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_trigger_lost_converges_after_one_sweep_and_one_drain(api, make_namespace):
    namespace = make_namespace()
    other = make_namespace()
    for counter, delta in [("a", 5), ("b", 7), ("a", -2)]:
        add(api, namespace, counter, delta)
    add(api, other, "z", 11)
    get_redis().flushdb()  # this test database only: FLUSHALL would wipe the live data of `make run`
    assert queues.due_queues(namespace.name) == []
    swept = pipeline.sweep_stale(0)
    assert swept.stale == 3
    drain_everything(namespace)
    drain_everything(other)
    assert checkpoint_counts(namespace) == {"a": 3, "b": 7}
    assert checkpoint_counts(other) == {"z": 11}
    # The watermark moved past everything folded: the next sweep finds nothing to re-enqueue.
    assert pipeline.sweep_stale(0).stale == 0


@pytest.mark.django_db(transaction=True)
def test_a_long_accept_limit_in_one_namespace_does_not_delay_the_sweep_of_another(api, make_namespace):
    slow = make_namespace(accept_limit_seconds=3600)
    fast = make_namespace()
    add(api, slow, "s", 1)
    add(api, fast, "f", 4)
    get_redis().flushdb()  # this test database only: FLUSHALL would wipe the live data of `make run`
    assert pipeline.sweep_stale(0).stale == 1
    assert queues.due_queues(fast.name) != []
    assert queues.due_queues(slow.name) == []
    drain_everything(fast)
    assert checkpoint_counts(fast) == {"f": 4}
    assert checkpoint_counts(slow) == {}


@pytest.mark.django_db(transaction=True)
def test_the_sweep_re_enqueues_only_counters_with_events_newer_than_their_checkpoint(api, make_namespace):
    namespace = make_namespace(accept_limit_seconds=0)
    add(api, namespace, "a", 1)
    add(api, namespace, "b", 2)
    pipeline.rollup(namespace, ["a", "b"])
    add(api, namespace, "a", 3)
    add(api, namespace, "c", 4)
    get_redis().flushdb()  # this test database only
    assert pipeline.sweep_stale(0).stale == 2
    queued = {
        member
        for index in range(queues.MAX_QUEUES)
        for member in get_redis().zrange(queues.queue_key(namespace.name, index), 0, -1)
    }
    assert queued == {"a", "c"}
    # The watermark stops just before the oldest event still unfolded ("a"'s second add).
    first_unfolded = Event.objects.filter(namespace=namespace.name, counter="a").order_by("-event_time")[0].event_time
    assert SweepState.objects.get(namespace=namespace.name).swept_until == first_unfolded - dt.timedelta(microseconds=1)
    drain_everything(namespace)
    assert checkpoint_counts(namespace) == {"a": 4, "b": 2, "c": 4}
    assert pipeline.sweep_stale(0).stale == 0


# -- retention -------------------------------------------------------------------------------


def _old_events(namespace, day: dt.date, rows: list[tuple[str, int]]) -> str:
    [name] = partitions.ensure_partitions(day, 1) or [partitions.name_for(day)]
    with connection.cursor() as cursor:
        for counter, delta in rows:
            cursor.execute(
                "INSERT INTO counters_event (namespace, counter, kind, delta, event_time) VALUES (%s, %s, 0, %s, %s)",
                [namespace.name, counter, delta, dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)],
            )
    return name


@pytest.mark.django_db(transaction=True)
def test_a_partition_with_unrolled_events_is_rolled_up_before_it_is_dropped(make_namespace):
    namespace = make_namespace(retention_days=1)
    old = _old_events(namespace, dt.date.today() - dt.timedelta(days=10), [("a", 4), ("a", 6), ("b", 1)])
    first = retention.enforce()
    assert (first.held, first.dropped) == ([old], [])
    assert checkpoint_counts(namespace) == {"a": 10, "b": 1}
    second = retention.enforce()
    assert (second.held, second.dropped) == ([], [old])
    assert old not in [p.name for p in partitions.list_partitions()]
    assert checkpoint_counts(namespace) == {"a": 10, "b": 1}


@pytest.mark.django_db(transaction=True)
def test_two_retention_runs_at_once_are_harmless(make_namespace):
    namespace = make_namespace(retention_days=1)
    old = _old_events(namespace, dt.date.today() - dt.timedelta(days=10), [("a", 4), ("b", 2)])
    errors = []

    def run():
        try:
            retention.enforce()
            retention.enforce()
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert old not in [p.name for p in partitions.list_partitions()]
    assert checkpoint_counts(namespace) == {"a": 4, "b": 2}


@pytest.mark.django_db(transaction=True)
def test_expired_tokens_are_pruned_in_bounded_batches(make_namespace):
    namespace = make_namespace(idempotency_window_seconds=60)
    now = dt.datetime.now(dt.UTC)
    IdempotencyToken.objects.bulk_create(
        IdempotencyToken(
            namespace=namespace.name,
            counter="c",
            token=f"t{i}",
            operation="add",
            delta=1,
            response_status=200,
            response_body={},
            created_at=now - dt.timedelta(seconds=3600 if i < 25 else 1),
        )
        for i in range(28)
    )
    batches = []
    with connection.execute_wrapper(lambda execute, sql, *rest: batches.append(sql) or execute(sql, *rest)):
        assert retention.prune_tokens(chunk=10) == 25
    assert sum("DELETE FROM counters_idempotencytoken" in sql for sql in batches) == 3
    assert sorted(IdempotencyToken.objects.values_list("token", flat=True)) == ["t25", "t26", "t27"]


# -- handoff ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_batch_claimed_by_a_dead_worker_is_redone_after_its_lease_and_counts_once(api, make_namespace):
    namespace = make_namespace(rollup_num_queues=1)
    add(api, namespace, "a", 5)
    add(api, namespace, "b", 2)
    queues.trigger(namespace.name, 1, ["a", "b"], queues.now_ms())
    # A worker claims the batch and dies before folding it: no acknowledgement ever comes.
    claimed, _ = queues.claim(namespace.name, 0, 10, lease_ms=200)
    assert sorted(claimed) == ["a", "b"]
    assert pipeline.drain(namespace, 0).counters == 0
    time.sleep(0.3)
    assert queues.due_queues(namespace.name) == [0]
    assert pipeline.drain(namespace, 0).counters == 2
    assert checkpoint_counts(namespace) == {"a": 5, "b": 2}
    assert queues.depths(namespace.name) == {}


@pytest.mark.django_db(transaction=True)
def test_a_rollup_task_delivered_twice_counts_once(api, make_namespace):
    from rollups import tasks

    namespace = make_namespace(rollup_num_queues=1)
    for delta in (1, 2, 3):
        add(api, namespace, "a", delta)
    queues.trigger(namespace.name, 1, ["a"], queues.now_ms())

    def deliver():
        tasks.drain_queue(namespace.name, 0)
        connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tasks.drain_queue(namespace.name, 0)
    pipeline.rollup(namespace, ["a"])
    assert checkpoint_counts(namespace) == {"a": 6}


# -- audit -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_recount_finds_repairs_and_counts_drift(api, make_namespace):
    namespace = make_namespace()
    for delta in (5, 7):
        add(api, namespace, "a", delta)
    pipeline.rollup(namespace, ["a"])
    Checkpoint.objects.filter(namespace=namespace.name, counter="a").update(last_rollup_count=99)
    drift_before = metrics.DRIFT.labels(namespace.name)._value.get()
    result = audit.recount(namespace, "a")
    assert (result.status, result.stored, result.recounted, result.drift) == ("repaired", 99, 12, -87)
    assert metrics.DRIFT.labels(namespace.name)._value.get() == drift_before + 1
    assert checkpoint_counts(namespace) == {"a": 12}
    assert cache.get(namespace.name, "a").count == 12
    assert audit.recount(namespace, "a").status == "ok"


@pytest.mark.django_db(transaction=True)
def test_recount_without_repair_only_reports(api, make_namespace):
    namespace = make_namespace()
    add(api, namespace, "a", 5)
    pipeline.rollup(namespace, ["a"])
    Checkpoint.objects.filter(namespace=namespace.name, counter="a").update(last_rollup_count=4)
    assert audit.recount(namespace, "a", repair=False).status == "drift"
    assert checkpoint_counts(namespace) == {"a": 4}


@pytest.mark.django_db(transaction=True)
def test_a_counter_whose_early_events_may_be_dropped_is_unverifiable_unless_a_clear_covers_them(api, make_namespace):
    namespace = make_namespace()
    add(api, namespace, "a", 5)
    pipeline.rollup(namespace, ["a"])
    floor = audit.retention_floor()
    Checkpoint.objects.filter(namespace=namespace.name).update(first_event_ts=floor - dt.timedelta(days=30))
    assert audit.recount(namespace, "a").status == "unverifiable"
    api.post(counter_url(namespace.name, "a", "clear"), {}, format="json")
    add(api, namespace, "a", 2)
    pipeline.rollup(namespace, ["a"])
    result = audit.recount(namespace, "a")
    assert (result.status, result.recounted) == ("ok", 2)


@pytest.mark.django_db(transaction=True)
def test_the_audit_task_samples_checkpoints_and_repairs_the_drifted_one(api, make_namespace):
    from rollups import tasks

    namespace = make_namespace()
    for counter in ("a", "b", "c"):
        add(api, namespace, counter, 3)
    pipeline.rollup(namespace, ["a", "b", "c"])
    Checkpoint.objects.filter(namespace=namespace.name, counter="b").update(last_rollup_count=0)
    # Sampling starts at a random id; a sample as large as the table must still see every row
    # from the lowest id, so the task is run until the draw starts at the first row.
    for _ in range(50):
        summary = tasks.audit_sample()
        if summary["checked"] == 3:
            break
    assert summary["checked"] == 3
    assert checkpoint_counts(namespace) == {"a": 3, "b": 3, "c": 3}


# -- live reconfiguration --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_changing_num_queues_while_counters_are_queued_loses_none(api, make_namespace):
    from rollups import tasks

    namespace = make_namespace(rollup_num_queues=8)
    counters = [f"c{i}" for i in range(20)]
    for counter in counters:
        add(api, namespace, counter, 2)
    namespace.rollup_num_queues = 3
    namespace.save()
    for counter in counters[:5]:
        add(api, namespace, counter, 1)
    old_indexes = set(queues.depths(namespace.name))
    assert max(old_indexes) >= 3
    time.sleep(max(namespace.rollup_coalesce_ms, 1) / 1000)
    for index in queues.due_queues(namespace.name):
        tasks.drain_queue(namespace.name, index)
    assert checkpoint_counts(namespace) == {c: 3 if c in counters[:5] else 2 for c in counters}
