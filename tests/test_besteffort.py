"""best_effort counters: TTL set atomically on first write, int64 overflow refused, batches all or
nothing (counters/besteffort.py)."""

from __future__ import annotations

import pytest

from counterproject.redis_client import get_redis
from counters import besteffort
from tests.conftest import counter_url, error_of, token

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def test_ttl_is_set_by_the_first_write_and_never_extended(api, make_namespace):
    namespace = make_namespace("best_effort", ttl_seconds=1000)
    key = besteffort.value_key(namespace.name, "t")
    redis = get_redis()
    api.post(counter_url(namespace.name, "t", "add"), {"delta": 1}, format="json")
    assert 999 <= redis.ttl(key) <= 1000
    redis.expire(key, 500)  # stands for 500 seconds passing
    api.post(counter_url(namespace.name, "t", "add"), {"delta": 1}, format="json")
    api.post(counter_url(namespace.name, "t", "add-and-get"), {"delta": -5}, format="json")
    api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": [{"counter": "t", "delta": 2}]}, format="json")
    assert 499 <= redis.ttl(key) <= 500
    assert api.get(counter_url(namespace.name, "t")).json()["count"] == -1


def test_ttl_is_set_when_the_first_write_is_zero_or_negative(api, make_namespace):
    namespace = make_namespace("best_effort", ttl_seconds=60)
    api.post(counter_url(namespace.name, "zero", "add"), {"delta": 0}, format="json")
    api.post(counter_url(namespace.name, "neg", "add"), {"delta": -3}, format="json")
    assert 59 <= get_redis().ttl(besteffort.value_key(namespace.name, "zero")) <= 60
    assert 59 <= get_redis().ttl(besteffort.value_key(namespace.name, "neg")) <= 60


def test_a_write_after_a_clear_starts_a_new_ttl(api, make_namespace):
    namespace = make_namespace("best_effort", ttl_seconds=1000)
    key = besteffort.value_key(namespace.name, "t")
    api.post(counter_url(namespace.name, "t", "add"), {"delta": 1}, format="json")
    get_redis().expire(key, 10)
    api.post(counter_url(namespace.name, "t", "clear"), {}, format="json")
    api.post(counter_url(namespace.name, "t", "add"), {"delta": 2}, format="json")
    assert 999 <= get_redis().ttl(key) <= 1000


def test_an_expired_counter_counts_zero_and_leaves_the_listing(api, make_namespace):
    namespace = make_namespace("best_effort", ttl_seconds=1000)
    for name in ("a", "b"):
        api.post(counter_url(namespace.name, name, "add"), {"delta": 3}, format="json")
    get_redis().delete(besteffort.value_key(namespace.name, "a"))  # what expiry does
    assert api.get(counter_url(namespace.name, "a")).json()["count"] == 0
    listing = api.get(f"/api/v1/namespaces/{namespace.name}/counters").json()
    assert listing == {"results": [{"counter": "b", "count": 3, "as_of": None}], "next": None}


def test_without_ttl_counters_never_expire(api, make_namespace):
    namespace = make_namespace("best_effort")
    api.post(counter_url(namespace.name, "p", "add"), {"delta": 1}, format="json")
    assert get_redis().ttl(besteffort.value_key(namespace.name, "p")) == -1


@pytest.mark.parametrize(("start", "delta"), [(INT64_MAX, 1), (INT64_MIN, -1), (INT64_MAX - 5, 6), (-5, INT64_MIN)])
def test_overflow_is_refused_with_the_value_unchanged(api, make_namespace, start, delta):
    namespace = make_namespace("best_effort", ttl_seconds=1000)
    api.post(counter_url(namespace.name, "o", "add"), {"delta": start}, format="json")
    for action in ("add", "add-and-get"):
        body = {"delta": delta, "idempotency_token": token()}
        details = error_of(
            api.post(counter_url(namespace.name, "o", action), body, format="json"), 422, "count_overflow"
        )
        assert details == {}
    assert api.get(counter_url(namespace.name, "o")).json()["count"] == start
    assert 999 <= get_redis().ttl(besteffort.value_key(namespace.name, "o")) <= 1000


def test_a_refused_overflow_does_not_burn_its_token(api, make_namespace):
    namespace = make_namespace("best_effort")
    tok = token()
    api.post(counter_url(namespace.name, "o", "add"), {"delta": INT64_MAX}, format="json")
    body = {"delta": 1, "idempotency_token": tok}
    error_of(api.post(counter_url(namespace.name, "o", "add"), body, format="json"), 422, "count_overflow")
    api.post(counter_url(namespace.name, "o", "add"), {"delta": -10}, format="json")
    assert api.post(counter_url(namespace.name, "o", "add"), body, format="json").status_code == 200
    assert api.get(counter_url(namespace.name, "o")).json()["count"] == INT64_MAX - 9


def test_a_batch_with_one_overflowing_item_applies_nothing(api, make_namespace):
    namespace = make_namespace("best_effort", ttl_seconds=1000)
    api.post(counter_url(namespace.name, "full", "add"), {"delta": INT64_MAX}, format="json")
    get_redis().expire(besteffort.value_key(namespace.name, "full"), 300)
    mutations = [
        {"counter": "fresh", "delta": 5, "idempotency_token": token("t1")},
        {"counter": "full", "op": "clear"},
        {"counter": "full", "delta": INT64_MAX},
        {"counter": "other", "delta": 1},
        {"counter": "other", "delta": INT64_MAX},
    ]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 422, "count_overflow") == {"index": 4}
    assert api.get(counter_url(namespace.name, "fresh")).json()["count"] == 0
    assert api.get(counter_url(namespace.name, "full")).json()["count"] == INT64_MAX
    assert api.get(counter_url(namespace.name, "other")).json()["count"] == 0
    assert 299 <= get_redis().ttl(besteffort.value_key(namespace.name, "full")) <= 300
    assert get_redis().exists(besteffort.token_key(namespace.name, "fresh", "t1")) == 0
    # The token was not remembered: the same item applies now.
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations[:1]}, format="json")
    assert response.json() == {"results": [{"counter": "fresh", "applied": True}]}
    assert api.get(counter_url(namespace.name, "fresh")).json()["count"] == 5


def test_counts_stay_exact_up_to_int64(api, make_namespace):
    namespace = make_namespace("best_effort")
    url = counter_url(namespace.name, "edge", "add-and-get")
    assert api.post(url, {"delta": 2**62}, format="json").json()["count"] == 2**62
    assert api.post(url, {"delta": 2**62 - 1}, format="json").json()["count"] == INT64_MAX
    assert b'"count":9223372036854775807' in api.get(counter_url(namespace.name, "edge")).content
    assert api.post(url, {"delta": INT64_MIN}, format="json").json()["count"] == -1
    assert api.post(url, {"delta": -(2**63) + 1}, format="json").json()["count"] == INT64_MIN


def test_tokens_are_remembered_for_the_idempotency_window(api, make_namespace):
    namespace = make_namespace("best_effort", idempotency_window_seconds=120)
    api.post(counter_url(namespace.name, "w", "add"), {"delta": 1, "idempotency_token": token("tw")}, format="json")
    assert 119 <= get_redis().ttl(besteffort.token_key(namespace.name, "w", "tw")) <= 120


def test_adds_go_on_after_redis_forgets_its_scripts(api, make_namespace):
    namespace = make_namespace("best_effort")
    url = counter_url(namespace.name, "c", "add")
    assert api.post(url, {"delta": 2}, format="json").status_code == 200
    get_redis().script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    assert api.post(url, {"delta": 3}, format="json").json()["applied"] is True
    assert api.get(counter_url(namespace.name, "c")).json()["count"] == 5
