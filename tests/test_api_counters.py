"""Counter endpoints (API.md "Counters"): success and error shapes of GetCount, AddCount,
AddAndGetCount, ClearCount, Batch and Listing, for every counter type."""

from __future__ import annotations

import datetime as dt

import pytest

from counters.models import Namespace
from rollups import pipeline
from rollups.models import Checkpoint
from tests.conftest import counter_url, error_of, token

TYPES = ["best_effort", "eventual", "accurate"]
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def add(api, namespace: str, counter: str, delta: int, **extra):
    response = api.post(counter_url(namespace, counter, "add"), {"delta": delta, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response


def count_of(api, namespace: Namespace, counter: str) -> int:
    """The count a client reads once every committed event is rolled up."""
    if namespace.uses_event_log:
        pipeline.rollup(namespace, [counter])
    return api.get(counter_url(namespace.name, counter)).json()["count"]


def parse_time(value: str) -> dt.datetime:
    assert value.endswith("Z")
    return dt.datetime.fromisoformat(value)


# --- success shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("counter_type", TYPES)
def test_a_counter_never_written_counts_zero(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    response = api.get(counter_url(namespace.name, "never"))
    assert response.status_code == 200
    body = response.json()
    as_of = body.pop("as_of")
    assert body == {"namespace": namespace.name, "counter": "never", "count": 0, "consistency": counter_type}
    if counter_type == "accurate":
        assert abs(parse_time(as_of) - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    else:
        assert as_of is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_add_add_and_get_and_clear_have_their_documented_bodies(api, make_namespace, counter_type):
    ns = make_namespace(counter_type).name
    name = "page:home✓"
    response = api.post(counter_url(ns, name, "add"), {"delta": 5}, format="json")
    assert response.status_code == 200
    assert response.json() == {"namespace": ns, "counter": name, "delta": 5, "applied": True}
    assert "Idempotent-Replayed" not in response

    response = api.post(counter_url(ns, name, "add-and-get"), {"delta": -2}, format="json")
    assert response.status_code == 200
    assert response.json() == {"namespace": ns, "counter": name, "delta": -2, "applied": True, "count": 3}

    response = api.post(counter_url(ns, name, "clear"), {}, format="json")
    assert response.status_code == 200
    assert response.json() == {"namespace": ns, "counter": name, "count": 0, "applied": True}

    response = api.post(counter_url(ns, name, "clear"))
    assert response.status_code == 200
    assert response.json()["count"] == 0

    add(api, ns, name, 4)
    assert count_of(api, Namespace.objects.get(name=ns), name) == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_get_count_shape_after_writes(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    add(api, namespace.name, "hits", 7)
    if namespace.uses_event_log:
        pipeline.rollup(namespace, ["hits"])
    body = api.get(counter_url(namespace.name, "hits")).json()
    as_of = body.pop("as_of")
    assert body == {"namespace": namespace.name, "counter": "hits", "count": 7, "consistency": counter_type}
    if counter_type == "best_effort":
        assert as_of is None
    else:
        assert isinstance(parse_time(as_of), dt.datetime)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_batch_applies_in_order_and_reports_each_item(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    body = {
        "mutations": [
            {"counter": "a", "delta": 5},
            {"counter": "b", "op": "add", "delta": 2},
            {"counter": "a", "op": "clear"},
            {"counter": "a", "delta": 3, "idempotency_token": token()},
            {"counter": "c", "delta": 0},
        ]
    }
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", body, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"counter": "a", "applied": True},
            {"counter": "b", "applied": True},
            {"counter": "a", "applied": True},
            {"counter": "a", "applied": True},
            {"counter": "c", "applied": True},
        ]
    }
    assert [count_of(api, namespace, c) for c in ("a", "b", "c")] == [3, 2, 0]


def test_an_empty_batch_applies_nothing(api, make_namespace):
    namespace = make_namespace("eventual")
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": []}, format="json")
    assert response.status_code == 200
    assert response.json() == {"results": []}


# --- listing ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_listing_filters_by_prefix_and_pages_with_a_cursor(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    names = ["user:b", "user:a", "user:é", "user:c", "user:d", "users", "admin:x", "user:Z"]
    mutations = [{"counter": name, "delta": index + 1} for index, name in enumerate(names)]
    assert (
        api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json").status_code
        == 200
    )
    if namespace.uses_event_log:
        pipeline.rollup(namespace, names)
    expected = {name: index + 1 for index, name in enumerate(names)}

    pages = []
    url = f"/api/v1/namespaces/{namespace.name}/counters?prefix=user:&limit=2"
    while url:
        response = api.get(url)
        assert response.status_code == 200
        pages.append(response.json())
        url = pages[-1]["next"]

    listed = [[item["counter"] for item in page["results"]] for page in pages]
    # Code-point order: upper case before lower case, 'é' (U+00E9) after ASCII.
    assert listed == [["user:Z", "user:a"], ["user:b", "user:c"], ["user:d", "user:é"]]
    for page in pages:
        for item in page["results"]:
            assert item["count"] == expected[item["counter"]]
            assert (item["as_of"] is None) == (counter_type == "best_effort")
    assert pages[0]["next"].startswith("http://testserver/api/v1/namespaces/")
    assert "prefix=user%3A" in pages[0]["next"]

    everything = api.get(f"/api/v1/namespaces/{namespace.name}/counters").json()
    assert [item["counter"] for item in everything["results"]] == sorted(names)
    assert everything["next"] is None


@pytest.mark.django_db(transaction=True)
def test_accurate_listing_includes_events_after_the_checkpoint(api, make_namespace):
    namespace = make_namespace("accurate")
    add(api, namespace.name, "k", 1)
    pipeline.rollup(namespace, ["k"])
    add(api, namespace.name, "k", 10)
    [item] = api.get(f"/api/v1/namespaces/{namespace.name}/counters").json()["results"]
    assert item["count"] == 11


def test_listing_refuses_a_bad_limit_or_cursor(api, make_namespace):
    namespace = make_namespace("best_effort")
    url = f"/api/v1/namespaces/{namespace.name}/counters"
    error_of(api.get(url + "?limit=0"), 400, "invalid_request")
    error_of(api.get(url + "?limit=1001"), 400, "invalid_request")
    error_of(api.get(url + "?limit=-1"), 400, "invalid_request")
    error_of(api.get(url + "?cursor=%FF%FE"), 400, "invalid_request")


# --- read semantics -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_accurate_reads_include_unrolled_events_as_of_now(api, make_namespace):
    namespace = make_namespace("accurate", accept_limit_seconds=3600)
    add(api, namespace.name, "tail", 4)
    add(api, namespace.name, "tail", 5)
    before = dt.datetime.now(dt.UTC)
    body = api.get(counter_url(namespace.name, "tail")).json()
    after = dt.datetime.now(dt.UTC)
    assert body["count"] == 9
    assert before - dt.timedelta(seconds=1) <= parse_time(body["as_of"]) <= after + dt.timedelta(seconds=1)
    assert pipeline.rollup(namespace, ["tail"]).advanced == 0
    assert not Checkpoint.objects.filter(namespace=namespace.name).exists()


@pytest.mark.django_db(transaction=True)
def test_eventual_reads_lag_until_rollup_and_report_the_checkpoint_time(api, make_namespace):
    namespace = make_namespace("eventual")
    add(api, namespace.name, "lag", 4)
    assert api.get(counter_url(namespace.name, "lag")).json() == {
        "namespace": namespace.name,
        "counter": "lag",
        "count": 0,
        "consistency": "eventual",
        "as_of": None,
    }
    pipeline.rollup(namespace, ["lag"])
    checkpoint = Checkpoint.objects.get(namespace=namespace.name, counter="lag")
    cached = api.get(counter_url(namespace.name, "lag")).json()
    assert (cached["count"], parse_time(cached["as_of"])) == (4, checkpoint.last_rollup_ts)

    add(api, namespace.name, "lag", 1)
    assert api.get(counter_url(namespace.name, "lag")).json()["count"] == 4
    from counterproject.redis_client import get_redis

    get_redis().flushdb()  # a cache miss reads the checkpoint from PostgreSQL
    uncached = api.get(counter_url(namespace.name, "lag")).json()
    assert (uncached["count"], parse_time(uncached["as_of"])) == (4, checkpoint.last_rollup_ts)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_add_and_get_reads_its_own_write(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type, accept_limit_seconds=3600)
    add(api, namespace.name, "own", 10)
    response = api.post(counter_url(namespace.name, "own", "add-and-get"), {"delta": 1}, format="json")
    assert response.json()["count"] == 11


# --- exact big numbers --------------------------------------------------------------------------

BIG_DELTAS = [2**31, 2**31 + 1, 2**62, INT64_MAX, INT64_MAX, INT64_MAX, -(2**31), INT64_MIN, INT64_MIN, 1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", ["eventual", "accurate"])
def test_large_deltas_sum_exactly_past_int64(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    running = 0
    for delta in BIG_DELTAS[:6]:
        add(api, namespace.name, "big", delta)
        running += delta
    assert running > INT64_MAX
    assert count_of(api, namespace, "big") == running
    response = api.get(counter_url(namespace.name, "big"))
    assert f'"count":{running}'.encode() in response.content.replace(b" ", b"")

    for delta in BIG_DELTAS[6:]:
        add(api, namespace.name, "big", delta)
        running += delta
    assert count_of(api, namespace, "big") == running == sum(BIG_DELTAS)
    response = api.post(counter_url(namespace.name, "big", "add-and-get"), {"delta": INT64_MAX}, format="json")
    assert response.json()["count"] == running + INT64_MAX


@pytest.mark.django_db(transaction=True)
def test_negative_extremes_sum_exactly(api, make_namespace):
    namespace = make_namespace("accurate")
    for _ in range(3):
        add(api, namespace.name, "low", INT64_MIN)
    assert count_of(api, namespace, "low") == 3 * INT64_MIN
    assert api.get(f"/api/v1/namespaces/{namespace.name}/counters").json()["results"][0]["count"] == 3 * INT64_MIN


# --- error shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("counter_type", TYPES)
@pytest.mark.parametrize(
    "body",
    [
        {"delta": True},
        {"delta": 1.0},
        {"delta": 1.5},
        {"delta": "1"},
        {"delta": None},
        {"delta": 2**63},
        {"delta": -(2**63) - 1},
        {},
    ],
)
def test_add_refuses_invalid_deltas(api, make_namespace, counter_type, body):
    namespace = make_namespace(counter_type)
    for action in ("add", "add-and-get"):
        details = error_of(
            api.post(counter_url(namespace.name, "x", action), body, format="json"), 400, "invalid_delta"
        )
        assert "delta" in details["fields"]
    assert count_of(api, namespace, "x") == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"delta": NaN}', "invalid_delta"),
        (b'{"delta": Infinity}', "invalid_delta"),
        (b'{"delta": -Infinity}', "invalid_delta"),
        (b'{"delta": 1e3}', "invalid_delta"),
        (b'{"delta": 1,}', "invalid_request"),
        (b"", "invalid_delta"),  # an empty body is an object without delta
    ],
)
def test_add_refuses_non_integer_json(api, make_namespace, raw, code):
    namespace = make_namespace("accurate")
    response = api.post(counter_url(namespace.name, "x", "add"), raw, content_type="application/json")
    error_of(response, 400, code)
    assert count_of(api, namespace, "x") == 0


@pytest.mark.parametrize(
    "idempotency_token",
    [
        {"token": "", "generation_time": "2026-01-01T00:00:00Z"},
        {"token": "x" * 256, "generation_time": "2026-01-01T00:00:00Z"},
        {"token": 5, "generation_time": "2026-01-01T00:00:00Z"},
        {"token": "t", "generation_time": "2026-01-01T00:00:00"},
        {"token": "t", "generation_time": "yesterday"},
        {"token": "t"},
        {"token": "t", "generation_time": "2026-01-01T00:00:00Z", "extra": 1},
        "t",
    ],
)
def test_add_refuses_malformed_tokens(api, make_namespace, idempotency_token):
    namespace = make_namespace("eventual")
    body = {"delta": 1, "idempotency_token": idempotency_token}
    error_of(api.post(counter_url(namespace.name, "x", "add"), body, format="json"), 400, "invalid_token")


def test_add_refuses_unknown_fields_and_non_object_bodies(api, make_namespace):
    namespace = make_namespace("eventual")
    url = counter_url(namespace.name, "x", "add")
    details = error_of(api.post(url, {"delta": 1, "colour": "red"}, format="json"), 400, "invalid_request")
    assert details == {"fields": {"colour": ["Unknown field."]}}
    error_of(api.post(url, [1], format="json"), 400, "invalid_request")
    error_of(api.post(url, b"{", content_type="application/json"), 400, "invalid_request")


@pytest.mark.parametrize("name", ["a b", "tab\there", "..", ".", "x" * 256, "a%2Fb", "bell\x07"])
def test_bad_counter_names_are_refused(api, make_namespace, name):
    namespace = make_namespace("best_effort")
    base = f"/api/v1/namespaces/{namespace.name}/counters/"
    from urllib.parse import quote

    segment = name if name == "a%2Fb" else quote(name, safe="")
    error_of(api.post(base + segment + "/add", {"delta": 1}, format="json"), 400, "invalid_name")
    error_of(api.get(base + segment), 400, "invalid_name")
    error_of(api.post(base + segment + "/clear", {}, format="json"), 400, "invalid_name")


@pytest.mark.parametrize("counter_type", TYPES)
def test_token_times_outside_the_window_are_refused(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type, idempotency_window_seconds=600)
    now = dt.datetime.now(dt.UTC)
    url = counter_url(namespace.name, "x", "add")
    future = {"delta": 1, "idempotency_token": token(generation_time=now + dt.timedelta(seconds=120))}
    error_of(api.post(url, future, format="json"), 422, "generation_time_in_future")
    expired = {"delta": 1, "idempotency_token": token(generation_time=now - dt.timedelta(seconds=700))}
    error_of(api.post(url, expired, format="json"), 422, "idempotency_token_expired")
    slightly_ahead = {"delta": 1, "idempotency_token": token(generation_time=now + dt.timedelta(seconds=30))}
    assert api.post(url, slightly_ahead, format="json").status_code == 200
    assert count_of(api, namespace, "x") == 1


def test_unknown_namespace_is_404_on_every_counter_endpoint(api):
    error_of(api.get(counter_url("nope", "x")), 404, "namespace_not_found")
    error_of(api.post(counter_url("nope", "x", "add"), {"delta": 1}, format="json"), 404, "namespace_not_found")
    error_of(api.post(counter_url("nope", "x", "add-and-get"), {"delta": 1}, format="json"), 404, "namespace_not_found")
    error_of(api.post(counter_url("nope", "x", "clear"), {}, format="json"), 404, "namespace_not_found")
    error_of(api.post("/api/v1/namespaces/nope/batch", {"mutations": []}, format="json"), 404, "namespace_not_found")
    error_of(api.get("/api/v1/namespaces/nope/counters"), 404, "namespace_not_found")


def test_read_keys_cannot_mutate_and_scoped_keys_see_only_their_namespaces(client_for, make_namespace):
    mine = make_namespace("best_effort", name="mine")
    make_namespace("best_effort", name="theirs")
    reader = client_for("read")
    error_of(reader.post(counter_url("mine", "x", "add"), {"delta": 1}, format="json"), 403, "forbidden")
    error_of(reader.post(counter_url("mine", "x", "clear"), {}, format="json"), 403, "forbidden")
    error_of(reader.post("/api/v1/namespaces/mine/batch", {"mutations": []}, format="json"), 403, "forbidden")
    assert reader.get(counter_url("mine", "x")).status_code == 200
    scoped = client_for("write", ["mine"])
    error_of(scoped.post(counter_url("theirs", "x", "add"), {"delta": 1}, format="json"), 404, "namespace_not_found")
    error_of(scoped.get(counter_url("theirs", "x")), 404, "namespace_not_found")
    assert scoped.post(counter_url("mine", "x", "add"), {"delta": 1}, format="json").status_code == 200
    assert count_of(scoped, mine, "x") == 1


def api_urls(namespace: str) -> list[tuple[str, str]]:
    return [
        ("get", "/api/v1/namespaces"),
        ("post", "/api/v1/namespaces"),
        ("get", f"/api/v1/namespaces/{namespace}"),
        ("patch", f"/api/v1/namespaces/{namespace}"),
        ("delete", f"/api/v1/namespaces/{namespace}"),
        ("get", f"/api/v1/namespaces/{namespace}/counters"),
        ("post", f"/api/v1/namespaces/{namespace}/batch"),
        ("get", counter_url(namespace, "x")),
        ("post", counter_url(namespace, "x", "add")),
        ("post", counter_url(namespace, "x", "add-and-get")),
        ("post", counter_url(namespace, "x", "clear")),
    ]


@pytest.mark.parametrize("authorization", [None, "Bearer ck_unknown", "Bearer ", "Basic dXNlcjpwYXNz", "ck_unknown"])
def test_every_api_url_refuses_requests_without_a_known_key(make_namespace, authorization):
    from rest_framework.test import APIClient

    namespace = make_namespace("best_effort", name="locked")
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    for method, url in api_urls(namespace.name):
        body = {"delta": 1} if method in ("post", "patch") else None
        response = getattr(client, method)(url, body, format="json")
        error_of(response, 401, "unauthenticated")
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert Namespace.objects.filter(name="locked").exists()
    assert Namespace.objects.count() == 1


# --- batch validation ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
@pytest.mark.parametrize(
    ("bad_item", "code"),
    [
        ({"counter": "b", "delta": 1.0}, "invalid_delta"),
        ({"counter": "b", "delta": 2**63}, "invalid_delta"),
        ({"counter": "b"}, "invalid_delta"),
        ({"counter": "b", "op": "clear", "delta": 4}, "invalid_delta"),
        ({"counter": "b/c", "delta": 1}, "invalid_name"),
        ({"counter": "", "delta": 1}, "invalid_name"),
        ({"delta": 1}, "invalid_name"),
        ({"counter": "b", "op": "multiply", "delta": 1}, "invalid_request"),
        ({"counter": "b", "delta": 1, "idempotency_token": {"token": "t"}}, "invalid_token"),
        ({"counter": "b", "delta": 1, "colour": "red"}, "invalid_request"),
        ("b", "invalid_request"),
    ],
)
def test_batch_with_one_invalid_item_applies_nothing(api, make_namespace, counter_type, bad_item, code):
    namespace = make_namespace(counter_type)
    mutations = [{"counter": "a", "delta": 1}, {"counter": "b", "delta": 2}, bad_item, {"counter": "a", "delta": 3}]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 400, code)["index"] == 2
    assert count_of(api, namespace, "a") == 0
    assert count_of(api, namespace, "b") == 0


@pytest.mark.parametrize("body", [{}, {"mutations": {}}, {"mutations": "x"}, [], {"mutations": [], "extra": 1}])
def test_batch_refuses_a_malformed_envelope(api, make_namespace, body):
    namespace = make_namespace("eventual")
    error_of(api.post(f"/api/v1/namespaces/{namespace.name}/batch", body, format="json"), 400, "invalid_request")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_batch_over_max_batch_size_is_413_and_applies_nothing(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type, max_batch_size=3)
    url = f"/api/v1/namespaces/{namespace.name}/batch"
    four = [{"counter": "a", "delta": 1}] * 4
    details = error_of(api.post(url, {"mutations": four}, format="json"), 413, "payload_too_large")
    assert details == {"max_batch_size": 3, "size": 4}
    assert count_of(api, namespace, "a") == 0
    assert api.post(url, {"mutations": four[:3]}, format="json").status_code == 200
    assert count_of(api, namespace, "a") == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_batch_with_a_future_token_applies_nothing(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    future = token(generation_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    mutations = [{"counter": "a", "delta": 1}, {"counter": "a", "delta": 1, "idempotency_token": future}]
    response = api.post(f"/api/v1/namespaces/{namespace.name}/batch", {"mutations": mutations}, format="json")
    assert error_of(response, 422, "generation_time_in_future") == {"index": 1}
    assert count_of(api, namespace, "a") == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_type", TYPES)
def test_unusual_but_valid_names_round_trip(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    names = ["a?b#c%d&e=f", "ünï😀", "😀" * 255, "A", "a", "..."]
    for index, name in enumerate(names):
        response = api.post(counter_url(namespace.name, name, "add-and-get"), {"delta": index + 1}, format="json")
        assert (response.status_code, response.json()["counter"]) == (200, name)
    if namespace.uses_event_log:
        pipeline.rollup(namespace, names)
    for index, name in enumerate(names):
        assert api.get(counter_url(namespace.name, name)).json()["count"] == index + 1
    listed = []
    url = f"/api/v1/namespaces/{namespace.name}/counters?limit=1"
    while url:
        page = api.get(url).json()
        listed += [item["counter"] for item in page["results"]]
        url = page["next"]
    assert listed == sorted(names)


@pytest.mark.parametrize("counter_type", TYPES)
def test_a_batch_of_one_still_names_the_index_of_its_rejected_item(api, make_namespace, counter_type):
    namespace = make_namespace(counter_type)
    url = f"/api/v1/namespaces/{namespace.name}/batch"
    future = token(generation_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    response = api.post(url, {"mutations": [{"counter": "a", "delta": 1, "idempotency_token": future}]}, format="json")
    assert error_of(response, 422, "generation_time_in_future") == {"index": 0}
    expired = token(generation_time=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    response = api.post(
        url, {"mutations": [{"counter": "a", "op": "clear", "idempotency_token": expired}]}, format="json"
    )
    assert error_of(response, 422, "idempotency_token_expired") == {"index": 0}
