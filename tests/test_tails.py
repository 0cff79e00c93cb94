"""Accurate reads past a tail summary (rollups/tails.py): exact whatever clears, rollups, open
transactions and lost summaries happen, and cheap once the closed part of a tail is summarized."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connection, transaction

from counterproject.redis_client import get_redis
from counters import services
from counters.models import Namespace
from rollups import pipeline, tails
from tests.conftest import in_threads


@pytest.fixture(autouse=True)
def summaries_reach_the_present(monkeypatch):
    # These tests write and read within milliseconds; without the settle margin their summaries
    # cover the events they wrote, which is what they exercise.
    monkeypatch.setattr(tails, "SETTLE_SECONDS", 0)


def add(namespace: Namespace, counter: str, delta: int) -> None:
    services.mutate(namespace, [services.Mutation(counter, "add", delta, None)], "add")


def clear(namespace: Namespace, counter: str) -> None:
    services.mutate(namespace, [services.Mutation(counter, "clear", 0, None)], "clear")


def add_many(namespace: Namespace, counter: str, deltas: list[int]) -> None:
    services.mutate(namespace, [services.Mutation(counter, "add", d, None) for d in deltas], "batch")


@pytest.mark.django_db(transaction=True)
def test_a_long_tail_is_summed_once_then_only_past_its_summary(make_namespace):
    namespace = make_namespace("accurate", accept_limit_seconds=3600)
    add_many(namespace, "c", [2] * 600)
    first = tails.accurate_count(namespace, "c")
    assert (first.count, first.summed) == (1200, 600)
    add(namespace, "c", 5)
    second = tails.accurate_count(namespace, "c")
    assert (second.count, second.summed, second.has_tail) == (1205, 1, True)


@pytest.mark.django_db(transaction=True)
def test_clears_before_inside_and_after_a_summary_count_exactly(make_namespace, monkeypatch):
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 1)
    namespace = make_namespace("accurate", accept_limit_seconds=0)
    add(namespace, "c", 7)
    pipeline.rollup(namespace, ["c"])  # checkpoint 7
    add_many(namespace, "c", [1, 2])
    clear(namespace, "c")
    add(namespace, "c", 4)
    assert tails.accurate_count(namespace, "c").count == 4  # the summary now holds the clear
    add(namespace, "c", 10)
    assert tails.accurate_count(namespace, "c").count == 14
    clear(namespace, "c")
    assert tails.accurate_count(namespace, "c").count == 0
    add(namespace, "c", -3)
    assert tails.accurate_count(namespace, "c").count == -3


@pytest.mark.django_db(transaction=True)
def test_a_summary_of_an_older_checkpoint_or_a_lost_one_is_ignored(make_namespace, monkeypatch):
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 1)
    namespace = make_namespace("accurate", accept_limit_seconds=0)
    add_many(namespace, "c", [1, 2, 3])
    assert tails.accurate_count(namespace, "c").count == 6
    pipeline.rollup(namespace, ["c"])  # the checkpoint moves past the summary's
    add(namespace, "c", 10)
    result = tails.accurate_count(namespace, "c")
    assert (result.count, result.summed) == (16, 1)
    get_redis().delete(tails.key(namespace, "c"))
    add(namespace, "c", 100)
    assert tails.accurate_count(namespace, "c").count == 116


@pytest.mark.django_db(transaction=True)
def test_a_summary_never_covers_a_transaction_still_open(make_namespace, monkeypatch):
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 1)
    namespace = make_namespace("accurate", accept_limit_seconds=0)
    opened, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                add(namespace, "c", 1000)  # stamped with this transaction's start
                opened.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert opened.wait(5)
        add_many(namespace, "c", [1, 2])
        assert tails.accurate_count(namespace, "c").count == 3  # summarized up to before the writer
    finally:
        release.set()
        writer.join()
    assert tails.accurate_count(namespace, "c").count == 1003


@pytest.mark.django_db(transaction=True)
def test_random_histories_read_like_a_plain_sum(make_namespace, monkeypatch):
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 2)
    namespace = make_namespace("accurate", accept_limit_seconds=0)
    rng = random.Random(20261203)
    expected = {"a": 0, "b": 0}
    for _ in range(150):
        counter = rng.choice("ab")
        step = rng.random()
        if step < 0.55:
            deltas = [rng.randint(-5, 9) for _ in range(rng.randint(1, 4))]
            add_many(namespace, counter, deltas)
            expected[counter] += sum(deltas)
        elif step < 0.65:
            clear(namespace, counter)
            expected[counter] = 0
        elif step < 0.75:
            pipeline.rollup(namespace, [counter])
        elif step < 0.8:
            get_redis().delete(tails.key(namespace, counter))
        else:
            assert tails.accurate_count(namespace, counter).count == expected[counter]
    for counter, count in expected.items():
        assert tails.accurate_count(namespace, counter).count == count


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_readers_and_rollups_never_lose_an_add(make_namespace, monkeypatch):
    # Summaries refreshed on every read race writers' transactions and rollups moving the
    # checkpoint: with adds only, each reader must see a count that never goes down, and the end
    # must be exact.
    monkeypatch.setattr(tails, "REFRESH_EVENTS", 1)
    namespace = make_namespace("accurate", accept_limit_seconds=0)
    writes_per_writer, writers = 40, 3
    done = threading.Event()

    def work(i: int) -> list[int]:
        if i < writers:
            for _ in range(writes_per_writer):
                add(namespace, "c", 1)
            return []
        seen: list[int] = []
        while not done.is_set():
            if i == writers:
                pipeline.rollup(namespace, ["c"])
            else:
                seen.append(tails.accurate_count(namespace, "c").count)
        return seen

    def run(i: int) -> list[int]:
        try:
            return work(i)
        finally:
            if i < writers:
                finished.append(i)
                if len(finished) == writers:
                    done.set()

    finished: list[int] = []
    results = in_threads(writers + 3, run)
    for seen in results[writers + 1 :]:
        assert seen == sorted(seen)
    assert tails.accurate_count(namespace, "c").count == writers * writes_per_writer


@pytest.mark.django_db(transaction=True)
def test_a_summary_stops_short_of_the_last_second(make_namespace, monkeypatch):
    monkeypatch.setattr(tails, "SETTLE_SECONDS", 3600)
    namespace = make_namespace("accurate", accept_limit_seconds=3600)
    add_many(namespace, "c", [1] * 600)
    assert tails.accurate_count(namespace, "c").count == 600
    assert tails._get(namespace, "c").segment == tails.Segment(False, 0)  # none of the tail is settled yet
    assert tails.accurate_count(namespace, "c").summed == 600
