"""The rollup pipeline: idempotent under redelivery and concurrency, blind to nothing that commits
late, exact across clears (rollups/pipeline.py)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from counters import services
from counters.api.serializers import format_time
from counters.models import Namespace
from rollups import pipeline, queues, tasks
from rollups.models import Checkpoint
from tests.conftest import counter_url, in_threads


def add(namespace: Namespace, counter: str, delta: int) -> None:
    services.mutate(namespace, [services.Mutation(counter, "add", delta, None)], "add")


def clear(namespace: Namespace, counter: str) -> None:
    services.mutate(namespace, [services.Mutation(counter, "clear", 0, None)], "clear")


def checkpoint(namespace: Namespace, counter: str) -> Checkpoint:
    return Checkpoint.objects.get(namespace=namespace.name, counter=counter)


@pytest.mark.django_db(transaction=True)
def test_a_rollup_delivered_twice_counts_once(api, make_namespace):
    namespace = make_namespace("eventual")
    for delta in (3, 4):
        add(namespace, "twice", delta)
    first = pipeline.rollup(namespace, ["twice"])
    second = pipeline.rollup(namespace, ["twice"])
    assert (first.events, first.advanced) == (2, 1)
    assert second.events == 0
    assert int(checkpoint(namespace, "twice").last_rollup_count) == 7
    assert api.get(counter_url(namespace.name, "twice")).json()["count"] == 7


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_concurrent_rollups_of_the_same_counters_count_once(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    counters = [f"c{i}" for i in range(5)]
    for round_ in range(3):
        for index, counter in enumerate(counters):
            add(namespace, counter, index + 1)
        in_threads(8, lambda i: pipeline.rollup(namespace, counters))
        for index, counter in enumerate(counters):
            assert int(checkpoint(namespace, counter).last_rollup_count) == (index + 1) * (round_ + 1)
            assert api.get(counter_url(namespace.name, counter)).json()["count"] == (index + 1) * (round_ + 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_drains_of_one_queue_count_once(api, make_namespace):
    namespace = make_namespace("eventual", rollup_num_queues=1)
    counters = [f"d{i}" for i in range(40)]
    for counter in counters:
        add(namespace, counter, 2)
    queues.trigger(namespace.name, 1, counters, 0)
    results = in_threads(6, lambda i: pipeline.drain(namespace, 0))
    assert sum(result.counters for result in results) == 40
    in_threads(6, lambda i: pipeline.drain(namespace, 0))
    assert sorted(
        (c.counter, int(c.last_rollup_count)) for c in Checkpoint.objects.filter(namespace=namespace.name)
    ) == [(counter, 2) for counter in sorted(counters)]
    assert queues.depths(namespace.name) == {}


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_drain_task_counts_once(api, make_namespace):
    namespace = make_namespace("eventual", rollup_num_queues=2)
    for delta in (5, 6):
        add(namespace, "task", delta)
    index = queues.queue_index("task", 2)
    queues.trigger(namespace.name, 2, ["task"], 0)
    first = tasks.drain_queue.run(namespace.name, index)
    queues.trigger(namespace.name, 2, ["task"], 0)  # the same trigger delivered again
    second = tasks.drain_queue.run(namespace.name, index)
    third = tasks.drain_queue.run(namespace.name, index)
    assert (first["counters"], first["events"]) == (1, 2)
    assert (second["counters"], second["events"]) == (1, 0)
    assert third == {"batches": 0, "counters": 0, "events": 0}
    assert api.get(counter_url(namespace.name, "task")).json()["count"] == 11
    assert tasks.drain_queue.run("no-such-namespace", 0) == {}


@pytest.mark.django_db(transaction=True)
def test_concurrent_drain_tasks_count_once(api, make_namespace):
    namespace = make_namespace("accurate", rollup_num_queues=1)
    for counter in ("x", "y"):
        add(namespace, counter, 9)
    queues.trigger(namespace.name, 1, ["x", "y"], 0)
    in_threads(4, lambda i: tasks.drain_queue.run(namespace.name, 0))
    in_threads(4, lambda i: tasks.drain_queue.run(namespace.name, 0))
    assert [int(checkpoint(namespace, c).last_rollup_count) for c in ("x", "y")] == [9, 9]
    assert api.get(counter_url(namespace.name, "x")).json()["count"] == 9


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_an_add_committing_while_a_rollup_runs_is_counted_by_the_next_rollup(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    add(namespace, "slow", 1)
    inserted, release = threading.Event(), threading.Event()
    started_at = {}

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                add(namespace, "slow", 10)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT now()")
                    started_at["event_time"] = cursor.fetchone()[0]
                inserted.set()
                assert release.wait(timeout=30)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inserted.wait(timeout=30)
        result = pipeline.rollup(namespace, ["slow"])
        held_back = checkpoint(namespace, "slow")
        assert result.until < started_at["event_time"]
        assert held_back.last_rollup_ts < started_at["event_time"]
        assert int(held_back.last_rollup_count) == 1
    finally:
        release.set()
        writer.join(timeout=30)

    pipeline.rollup(namespace, ["slow"])
    pipeline.rollup(namespace, ["slow"])
    after = checkpoint(namespace, "slow")
    assert int(after.last_rollup_count) == 11
    assert after.last_rollup_ts >= started_at["event_time"]
    assert api.get(counter_url(namespace.name, "slow")).json()["count"] == 11


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_adds_before_a_clear_never_count_again(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    add(namespace, "c", 5)
    pipeline.rollup(namespace, ["c"])  # the add is in a closed window
    add(namespace, "c", 6)
    clear(namespace, "c")  # same window as the 6
    add(namespace, "c", 2)
    if counter_type == "accurate":
        assert api.get(counter_url(namespace.name, "c")).json()["count"] == 2
    pipeline.rollup(namespace, ["c"])
    assert int(checkpoint(namespace, "c").last_rollup_count) == 2
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == 2
    clear(namespace, "c")
    pipeline.rollup(namespace, ["c"])
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == 0
    add(namespace, "c", 1)
    pipeline.rollup(namespace, ["c"])
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["best_effort", "eventual", "accurate"])
def test_in_a_batch_an_add_after_a_clear_survives_and_one_before_does_not(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    add(namespace, "b", 100)
    if namespace.uses_event_log:
        pipeline.rollup(namespace, ["b"])
    mutations = [
        {"counter": "b", "delta": 5},
        {"counter": "other", "delta": 1},
        {"counter": "b", "op": "clear"},
        {"counter": "b", "delta": 7},
        {"counter": "b", "delta": 8},
        {"counter": "other", "op": "clear"},
    ]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert response.status_code == 200
    if namespace.uses_event_log:
        pipeline.rollup(namespace, ["b", "other"])
    assert api.get(counter_url(namespace.name, "b")).json()["count"] == 15
    assert api.get(counter_url(namespace.name, "other")).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_eventual_as_of_is_the_checkpoint_time(api, make_namespace):
    namespace = make_namespace("eventual")
    add(namespace, "t", 1)
    result = pipeline.rollup(namespace, ["t"])
    body = api.get(counter_url(namespace.name, "t")).json()
    assert body["as_of"] == format_time(result.until)
    assert checkpoint(namespace, "t").last_rollup_ts == result.until


@pytest.mark.django_db(transaction=True)
def test_a_rollup_with_nothing_new_leaves_the_count_and_moves_forward(api, make_namespace):
    namespace = make_namespace("eventual")
    add(namespace, "idle", 3)
    pipeline.rollup(namespace, ["idle"])
    before = checkpoint(namespace, "idle")
    pipeline.rollup(namespace, ["idle"])
    after = checkpoint(namespace, "idle")
    assert int(after.last_rollup_count) == 3
    assert after.last_rollup_ts >= before.last_rollup_ts
    assert pipeline.rollup(namespace, ["never-written"]).advanced == 0
    assert not Checkpoint.objects.filter(namespace=namespace.name, counter="never-written").exists()


@pytest.mark.django_db(transaction=True)
def test_a_rollup_of_a_deleted_namespace_writes_no_checkpoint(make_namespace):
    from counterproject.redis_client import get_redis
    from rollups import cache

    namespace = make_namespace("eventual")
    add(namespace, "x", 4)
    # The moment inside delete_namespace after the row is gone and before its events are swept:
    # a drain that loaded the namespace earlier must not leave a checkpoint behind.
    Namespace.objects.filter(name=namespace.name).delete()
    result = pipeline.rollup(namespace, ["x"])
    assert result.advanced == 0
    assert not Checkpoint.objects.filter(namespace=namespace.name).exists()
    assert get_redis().exists(cache.key(namespace.name, "x")) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_reading_counters_never_written_queues_no_rollup(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    for i in range(5):
        assert api.get(counter_url(namespace.name, f"never-{i}")).json()["count"] == 0
    assert queues.depths(namespace.name) == {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_reading_a_written_counter_queues_its_rollup(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    api.post(counter_url(namespace.name, "seen", "add"), {"delta": 2}, format="json")
    pipeline.rollup(namespace, ["seen"])
    api.post(counter_url(namespace.name, "seen", "add"), {"delta": 3}, format="json")
    queues.purge(namespace.name)
    assert api.get(counter_url(namespace.name, "seen")).json()["count"] == (5 if counter_type == "accurate" else 2)
    assert sum(queues.depths(namespace.name).values()) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("coalesce_ms, queued_again", [(60_000, 0), (0, 1)])
def test_reads_within_the_coalesce_window_queue_one_rollup(api, make_namespace, coalesce_ms, queued_again):
    namespace = make_namespace("eventual", rollup_coalesce_ms=coalesce_ms)
    api.post(counter_url(namespace.name, "hot", "add"), {"delta": 2}, format="json")
    pipeline.rollup(namespace, ["hot"])
    queues.purge(namespace.name)
    assert api.get(counter_url(namespace.name, "hot")).json()["count"] == 2
    assert sum(queues.depths(namespace.name).values()) == 1
    queues.purge(namespace.name)  # as if a worker had claimed and rolled it up
    for _ in range(3):
        assert api.get(counter_url(namespace.name, "hot")).json()["count"] == 2
    # Within the window the queued trigger would have coalesced anyway; past it reads queue again.
    assert sum(queues.depths(namespace.name).values()) == queued_again


@pytest.mark.django_db(transaction=True)
def test_dispatch_sends_one_drain_per_queue_until_that_drain_has_run(make_namespace, monkeypatch):
    namespace = make_namespace(rollup_num_queues=1)
    queues.trigger(namespace.name, 1, ["a", "b"], queues.now_ms())
    sent = []
    monkeypatch.setattr(tasks.drain_queue, "apply_async", lambda args, **options: sent.append(tuple(args)))
    assert tasks.dispatch() == 1
    assert tasks.dispatch() == 0  # the first drain is still pending
    assert sent == [(namespace.name, 0)]
    assert tasks.drain_queue.run(namespace.name, 0)["counters"] == 2
    queues.trigger(namespace.name, 1, ["c"], queues.now_ms())
    assert tasks.dispatch() == 1
    assert sent == [(namespace.name, 0), (namespace.name, 0)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("marked, folded", [(True, 1), (False, 0)])
def test_rollups_wait_for_open_transactions_but_not_for_readers_marked_appending_no_events(
    make_namespace, marked, folded
):
    namespace = make_namespace("eventual", accept_limit_seconds=0)
    reading, release = threading.Event(), threading.Event()

    def long_reader() -> None:
        try:
            with pipeline.appending_no_events() if marked else transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM counters_event")
                reading.set()
                release.wait(10)
        finally:
            connection.close()

    reader = threading.Thread(target=long_reader)
    reader.start()
    try:
        assert reading.wait(5)
        add(namespace, "a", 5)
        result = pipeline.rollup(namespace, ["a"])
    finally:
        release.set()
        reader.join()
    # An unmarked transaction may still append events stamped with its start: the window stays open.
    assert (result.events, result.pending) == (folded, 1 - folded)
