"""The bad-input table of API.md: every malformed request gets its documented status and error code,
and changes nothing (checked by reading the counts, events, tokens and configurations after)."""

from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
from urllib.parse import quote

import pytest
from django.db.models import Sum

from counterproject.redis_client import get_redis
from counters import reads
from counters.api.serializers import NamespaceSerializer
from counters.models import Event, IdempotencyToken, Namespace
from tests.conftest import counter_url, token

NS = "bad"
NOW = dt.datetime.now(dt.UTC)


def raw_token(**fields) -> str:
    return json.dumps({"delta": 1, "idempotency_token": {**token(), **fields}})


def gen_time(offset: dt.timedelta) -> str:
    return (dt.datetime.now(dt.UTC) + offset).isoformat()


def enc(name: str) -> str:
    return f"/api/v1/namespaces/{NS}/counters/{quote(name, safe='')}/add"


def raw_add(segment: str) -> str:
    return f"/api/v1/namespaces/{NS}/counters/{segment}/add"


def raw_uri(segment: str) -> dict:
    return {"RAW_URI": raw_add(segment)}


def batch(*mutations) -> str:
    return json.dumps({"mutations": list(mutations)})


ADD = f"/api/v1/namespaces/{NS}/counters/hits/add"
BATCH = f"/api/v1/namespaces/{NS}/batch"
CLEAR = f"/api/v1/namespaces/{NS}/counters/hits/clear"
NS_LIST = "/api/v1/namespaces"
NS_DETAIL = f"/api/v1/namespaces/{NS}"
GOOD = {"counter": "hits", "delta": 1}


def new_ns(**fields) -> str:
    return json.dumps({"name": "fresh", "counter_type": "eventual", **fields})


# (case id, method, path, raw body, extra headers, expected status, expected error code)
CASES = [
    # Counter names, in the URL and in a batch item.
    ("name-empty-batch", "post", BATCH, batch({"counter": "", "delta": 1}), {}, 400, "invalid_name"),
    ("name-256-code-points-url", "post", enc("x" * 256), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-256-code-points-batch", "post", BATCH, batch({"counter": "x" * 256, "delta": 1}), {}, 400, "invalid_name"),
    ("name-256-emoji-url", "post", enc("\U0001f600" * 256), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-nul-url", "post", enc("a\x00b"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-nul-batch", "post", BATCH, batch({"counter": "a\x00b", "delta": 1}), {}, 400, "invalid_name"),
    ("name-control-char-url", "post", enc("a\x07b"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-newline-url", "post", enc("a\nb"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-trailing-newline-url", "post", enc("hits\n"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-newline-get", "get", f"/api/v1/namespaces/{NS}/counters/a%0Ab", None, {}, 400, "invalid_name"),
    # An unknown operation reads as the counter "hits/multiply", whose "/" is refused whatever the method.
    ("unknown-operation", "post", f"/api/v1/namespaces/{NS}/counters/hits/multiply", "{}", {}, 400, "invalid_name"),
    ("name-del-char-batch", "post", BATCH, batch({"counter": "a\x7fb", "delta": 1}), {}, 400, "invalid_name"),
    ("name-space-url", "post", enc("a b"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-tab-batch", "post", BATCH, batch({"counter": "a\tb", "delta": 1}), {}, 400, "invalid_name"),
    ("name-nbsp-url", "post", enc("a\u00a0b"), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-line-separator-batch", "post", BATCH, batch({"counter": "a\u2028b", "delta": 1}), {}, 400, "invalid_name"),
    (
        "name-slash-raw-url",
        "post",
        f"/api/v1/namespaces/{NS}/counters/a/b/add",
        '{"delta": 1}',
        {},
        400,
        "invalid_name",
    ),
    ("name-slash-encoded-url", "post", enc("a/b"), '{"delta": 1}', {}, 400, "invalid_name"),
    # Not UTF-8 once percent-decoded; RAW_URI is the raw request target as gunicorn passes it.
    ("name-invalid-utf8-url", "post", raw_add("a%FFb"), '{"delta": 1}', raw_uri("a%FFb"), 400, "invalid_name"),
    ("name-surrogate-url", "post", raw_add("a%ED%A0%80b"), '{"delta": 1}', raw_uri("a%ED%A0%80b"), 400, "invalid_name"),
    ("name-slash-batch", "post", BATCH, batch({"counter": "a/b", "delta": 1}), {}, 400, "invalid_name"),
    ("name-dot-url", "post", enc("."), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-dotdot-url", "post", enc(".."), '{"delta": 1}', {}, 400, "invalid_name"),
    ("name-dot-batch", "post", BATCH, batch({"counter": ".", "delta": 1}), {}, 400, "invalid_name"),
    ("name-dotdot-batch", "post", BATCH, batch({"counter": "..", "delta": 1}), {}, 400, "invalid_name"),
    ("name-number-batch", "post", BATCH, batch({"counter": 5, "delta": 1}), {}, 400, "invalid_name"),
    (
        "name-nan-batch",
        "post",
        BATCH,
        batch({"counter": "@", "delta": 1}).replace('"@"', "NaN"),
        {},
        400,
        "invalid_name",
    ),
    ("name-null-batch", "post", BATCH, batch({"counter": None, "delta": 1}), {}, 400, "invalid_name"),
    (
        "namespace-upper-case",
        "post",
        "/api/v1/namespaces/BAD/counters/hits/add",
        '{"delta": 1}',
        {},
        404,
        "namespace_not_found",
    ),
    (
        "namespace-unknown",
        "post",
        "/api/v1/namespaces/nope/counters/hits/add",
        '{"delta": 1}',
        {},
        404,
        "namespace_not_found",
    ),
    # Deltas, as raw JSON text.
    ("delta-true", "post", ADD, '{"delta": true}', {}, 400, "invalid_delta"),
    ("delta-false", "post", ADD, '{"delta": false}', {}, 400, "invalid_delta"),
    ("delta-float", "post", ADD, '{"delta": 1.5}', {}, 400, "invalid_delta"),
    ("delta-1.0", "post", ADD, '{"delta": 1.0}', {}, 400, "invalid_delta"),
    ("delta-exponent", "post", ADD, '{"delta": 1e3}', {}, 400, "invalid_delta"),
    ("delta-string", "post", ADD, '{"delta": "1"}', {}, 400, "invalid_delta"),
    ("delta-null", "post", ADD, '{"delta": null}', {}, 400, "invalid_delta"),
    ("delta-nan", "post", ADD, '{"delta": NaN}', {}, 400, "invalid_delta"),
    ("delta-infinity", "post", ADD, '{"delta": Infinity}', {}, 400, "invalid_delta"),
    ("delta-minus-infinity", "post", ADD, '{"delta": -Infinity}', {}, 400, "invalid_delta"),
    ("delta-2^63", "post", ADD, '{"delta": 9223372036854775808}', {}, 400, "invalid_delta"),
    ("delta-21-digits", "post", ADD, '{"delta": ' + "1" * 21 + "}", {}, 400, "invalid_delta"),
    ("delta-5001-digits", "post", ADD, '{"delta": ' + "9" * 5001 + "}", {}, 400, "invalid_delta"),
    ("delta-minus-5001-digits", "post", ADD, '{"delta": -' + "9" * 5001 + "}", {}, 400, "invalid_delta"),
    (
        "delta-5001-digits-batch",
        "post",
        BATCH,
        '{"mutations": [{"counter": "hits", "delta": ' + "9" * 5001 + "}]}",
        {},
        400,
        "invalid_delta",
    ),
    ("config-5001-digits", "patch", NS_DETAIL, '{"max_batch_size": ' + "9" * 5001 + "}", {}, 400, "invalid_request"),
    # A repeated key: which value would count is a guess, so the body is refused.
    ("delta-repeated-key", "post", ADD, '{"delta": 1, "delta": 2}', {}, 400, "invalid_request"),
    (
        "batch-item-repeated-key",
        "post",
        BATCH,
        '{"mutations": [{"counter": "hits", "counter": "other", "delta": 1}]}',
        {},
        400,
        "invalid_request",
    ),
    (
        "config-repeated-key",
        "post",
        NS_LIST,
        '{"name": "fresh", "counter_type": "eventual", "name": "x"}',
        {},
        400,
        "invalid_request",
    ),
    ("delta--2^63-1", "post", ADD, '{"delta": -9223372036854775809}', {}, 400, "invalid_delta"),
    ("delta-10^400", "post", ADD, '{"delta": 1' + "0" * 400 + "}", {}, 400, "invalid_delta"),
    ("delta-array", "post", ADD, '{"delta": [1]}', {}, 400, "invalid_delta"),
    ("delta-missing", "post", ADD, "{}", {}, 400, "invalid_delta"),
    (
        "delta-nan-batch",
        "post",
        BATCH,
        batch(GOOD, {"counter": "hits"}).replace("}]", ', "delta": NaN}]'),
        {},
        400,
        "invalid_delta",
    ),
    ("delta-float-batch", "post", BATCH, batch(GOOD, {"counter": "hits", "delta": 2.0}), {}, 400, "invalid_delta"),
    ("token-nul-batch", "post", BATCH, batch({**GOOD, "idempotency_token": token("a\x00b")}), {}, 400, "invalid_token"),
    (
        "token-nan-batch",
        "post",
        BATCH,
        batch({**GOOD, "idempotency_token": token("@")}).replace('"@"', "NaN"),
        {},
        400,
        "invalid_token",
    ),
    ("token-nul", "post", ADD, raw_token(token="a\x00b"), {}, 400, "invalid_token"),
    ("token-lone-surrogate", "post", ADD, raw_token(token="\ud800"), {}, 400, "invalid_token"),
    (
        "token-lone-surrogate-batch",
        "post",
        BATCH,
        batch({**GOOD, "idempotency_token": token("x\udfff")}),
        {},
        400,
        "invalid_token",
    ),
    (
        "token-lone-surrogate-clear",
        "post",
        CLEAR,
        json.dumps({"idempotency_token": token("\ud800")}),
        {},
        400,
        "invalid_token",
    ),
    ("clear-body-null", "post", CLEAR, "null", {}, 400, "invalid_request"),
    ("clear-body-empty-list", "post", CLEAR, "[]", {}, 400, "invalid_request"),
    ("clear-body-zero", "post", CLEAR, "0", {}, 400, "invalid_request"),
    ("clear-body-false", "post", CLEAR, "false", {}, 400, "invalid_request"),
    ("clear-body-empty-string", "post", CLEAR, '""', {}, 400, "invalid_request"),
    (
        "delta-on-clear-batch",
        "post",
        BATCH,
        batch(GOOD, {"counter": "hits", "op": "clear", "delta": 3}),
        {},
        400,
        "invalid_delta",
    ),
    # Idempotency tokens and generation times.
    ("time-without-offset", "post", ADD, raw_token(generation_time="2026-12-03T15:04:05"), {}, 400, "invalid_token"),
    ("time-date-only", "post", ADD, raw_token(generation_time="2026-12-03"), {}, 400, "invalid_token"),
    ("time-not-a-time", "post", ADD, raw_token(generation_time="yesterday"), {}, 400, "invalid_token"),
    ("time-number", "post", ADD, raw_token(generation_time=1764774245), {}, 400, "invalid_token"),
    ("time-null", "post", ADD, raw_token(generation_time=None), {}, 400, "invalid_token"),
    (
        "time-missing",
        "post",
        ADD,
        json.dumps({"delta": 1, "idempotency_token": {"token": "t"}}),
        {},
        400,
        "invalid_token",
    ),
    (
        "time-year-1",
        "post",
        ADD,
        raw_token(generation_time="0001-01-01T00:00:00+01:00"),
        {},
        422,
        "idempotency_token_expired",
    ),
    (
        "time-year-9999",
        "post",
        ADD,
        raw_token(generation_time="9999-12-31T23:59:59-01:00"),
        {},
        422,
        "generation_time_in_future",
    ),
    (
        "time-far-future",
        "post",
        ADD,
        raw_token(generation_time=gen_time(dt.timedelta(days=1))),
        {},
        422,
        "generation_time_in_future",
    ),
    (
        "time-past-window",
        "post",
        ADD,
        raw_token(generation_time=gen_time(-dt.timedelta(days=2))),
        {},
        422,
        "idempotency_token_expired",
    ),
    (
        "time-past-window-batch",
        "post",
        BATCH,
        batch(GOOD, {**GOOD, "idempotency_token": token(generation_time=NOW - dt.timedelta(days=2))}),
        {},
        422,
        "idempotency_token_expired",
    ),
    ("token-number", "post", ADD, raw_token(token=5), {}, 400, "invalid_token"),
    ("token-empty", "post", ADD, raw_token(token=""), {}, 400, "invalid_token"),
    ("token-256-chars", "post", ADD, raw_token(token="t" * 256), {}, 400, "invalid_token"),
    ("token-nan", "post", ADD, raw_token(token="@").replace('"@"', "NaN"), {}, 400, "invalid_token"),
    ("token-unknown-field", "post", ADD, raw_token(extra=1), {}, 400, "invalid_token"),
    ("token-a-string", "post", ADD, json.dumps({"delta": 1, "idempotency_token": "abc"}), {}, 400, "invalid_token"),
    ("token-header-256-chars", "post", ADD, '{"delta": 1}', {"HTTP_IDEMPOTENCY_KEY": "k" * 256}, 400, "invalid_token"),
    # Bodies.
    ("body-not-json", "post", ADD, '{"delta": 1', {}, 400, "invalid_request"),
    ("body-invalid-utf8", "post", ADD, b'{"delta": 1, "x": "\xff"}', {}, 400, "invalid_request"),
    ("body-json-array", "post", ADD, "[1]", {}, 400, "invalid_request"),
    ("body-json-string", "post", ADD, '"delta"', {}, 400, "invalid_request"),
    ("body-json-null", "post", ADD, "null", {}, 400, "invalid_request"),
    ("body-deeply-nested", "post", ADD, "[" * 100_000 + "]" * 100_000, {}, 400, "invalid_request"),
    ("body-unknown-field", "post", ADD, '{"delta": 1, "extra": 1}', {}, 400, "invalid_request"),
    ("body-duplicate-delta", "post", ADD, '{"delta": 1, "delta": 1.5}', {}, 400, "invalid_request"),
    ("body-3-mb", "post", ADD, '{"delta": 1, "pad": "' + "x" * 3 * 1024 * 1024 + '"}', {}, 413, "payload_too_large"),
    (
        "body-form-encoded",
        "post",
        ADD,
        "delta=1",
        {"content_type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    ("batch-over-max", "post", BATCH, batch(*[GOOD] * 6), {}, 413, "payload_too_large"),
    ("batch-3-mb", "post", BATCH, batch(*[GOOD] * 200_000), {}, 413, "payload_too_large"),
    ("batch-not-a-list", "post", BATCH, json.dumps({"mutations": GOOD}), {}, 400, "invalid_request"),
    ("batch-item-not-object", "post", BATCH, batch(GOOD, 5), {}, 400, "invalid_request"),
    ("batch-unknown-op", "post", BATCH, batch(GOOD, {**GOOD, "op": "subtract"}), {}, 400, "invalid_request"),
    (
        "batch-reused-token",
        "post",
        BATCH,
        batch({**GOOD, "idempotency_token": token("same")}, {**GOOD, "delta": 2, "idempotency_token": token("same")}),
        {},
        422,
        "idempotency_key_reused",
    ),
    ("list-limit-not-number", "get", f"/api/v1/namespaces/{NS}/counters?limit=abc", None, {}, 400, "invalid_request"),
    ("list-limit-zero", "get", f"/api/v1/namespaces/{NS}/counters?limit=0", None, {}, 400, "invalid_request"),
    ("list-cursor-garbage", "get", f"/api/v1/namespaces/{NS}/counters?cursor=%25%25", None, {}, 400, "invalid_request"),
    ("list-prefix-nul", "get", f"/api/v1/namespaces/{NS}/counters?prefix=%00", None, {}, 400, "invalid_request"),
    (
        "list-prefix-256",
        "get",
        f"/api/v1/namespaces/{NS}/counters?prefix={'x' * 256}",
        None,
        {},
        400,
        "invalid_request",
    ),
    ("list-cursor-nul", "get", f"/api/v1/namespaces/{NS}/counters?cursor=AA", None, {}, 400, "invalid_request"),
    ("namespaces-limit-huge", "get", f"{NS_LIST}?limit=1001", None, {}, 400, "invalid_request"),
    # Namespace configurations.
    ("config-unknown-field", "post", NS_LIST, new_ns(colour="red"), {}, 400, "invalid_request"),
    ("config-true-for-integer", "post", NS_LIST, new_ns(retention_days=True), {}, 400, "invalid_request"),
    ("config-string-for-integer", "post", NS_LIST, new_ns(max_batch_size="10"), {}, 400, "invalid_request"),
    ("config-float-for-integer", "post", NS_LIST, new_ns(accept_limit_seconds=5.0), {}, 400, "invalid_request"),
    ("config-negative", "post", NS_LIST, new_ns(idempotency_window_seconds=-1), {}, 400, "invalid_request"),
    ("config-out-of-range", "post", NS_LIST, new_ns(max_batch_size=10_001), {}, 400, "invalid_request"),
    ("config-rollup-true", "post", NS_LIST, new_ns(rollup={"num_queues": True}), {}, 400, "invalid_request"),
    ("config-rollup-unknown", "post", NS_LIST, new_ns(rollup={"queues": 2}), {}, 400, "invalid_request"),
    ("config-rollup-not-object", "post", NS_LIST, new_ns(rollup=8), {}, 400, "invalid_request"),
    ("config-ttl-on-eventual", "post", NS_LIST, new_ns(ttl_seconds=60), {}, 400, "invalid_request"),
    ("config-bad-type", "post", NS_LIST, new_ns(counter_type="exact"), {}, 400, "invalid_request"),
    ("config-missing-type", "post", NS_LIST, json.dumps({"name": "fresh"}), {}, 400, "invalid_request"),
    ("config-name-upper", "post", NS_LIST, new_ns(name="Fresh"), {}, 400, "invalid_name"),
    ("config-name-slash", "post", NS_LIST, new_ns(name="a/b"), {}, 400, "invalid_name"),
    ("config-name-number", "post", NS_LIST, new_ns(name=7), {}, 400, "invalid_name"),
    ("config-name-nan", "post", NS_LIST, new_ns().replace('"fresh"', "NaN"), {}, 400, "invalid_name"),
    ("config-name-exists", "post", NS_LIST, new_ns(name=NS), {}, 409, "namespace_exists"),
    ("config-patch-type", "patch", NS_DETAIL, json.dumps({"counter_type": "eventual"}), {}, 400, "invalid_request"),
    ("config-patch-name", "patch", NS_DETAIL, json.dumps({"name": "other"}), {}, 400, "invalid_name"),
    ("config-patch-true", "patch", NS_DETAIL, json.dumps({"max_batch_size": True}), {}, 400, "invalid_request"),
    ("config-patch-unknown", "patch", NS_DETAIL, json.dumps({"colour": "red"}), {}, 400, "invalid_request"),
    ("config-patch-array", "patch", NS_DETAIL, "[]", {}, 400, "invalid_request"),
]


def snapshot() -> dict:
    """Everything a request could change: counts, events, tokens and every namespace's configuration."""
    namespace = Namespace.objects.get(name=NS)
    return {
        "hits": reads.get_count(namespace, "hits").count,
        "events": list(Event.objects.values_list("namespace", "counter").annotate(Sum("delta")).order_by("counter")),
        "tokens": IdempotencyToken.objects.count(),
        "namespaces": [NamespaceSerializer(ns).data for ns in Namespace.objects.order_by("name")],
        "redis_keys": sorted(key for key in get_redis().keys("*") if not key.startswith("throttle:")),
    }


@pytest.fixture
def seeded(api, make_namespace):
    """An accurate namespace (read-your-writes, so reads see every event) holding hits = 5."""
    make_namespace("accurate", name=NS, max_batch_size=5)
    response = api.post(ADD, {"delta": 5, "idempotency_token": token("seed")}, format="json")
    assert response.status_code == 200
    return api


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, body, headers, status, code", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_input_gets_its_error_and_changes_nothing(seeded, method, path, body, headers, status, code):
    before = snapshot()
    assert (before["hits"], before["events"]) == (5, [(NS, "hits", 5)])
    headers = dict(headers)
    content_type = headers.pop("content_type", "application/json")
    kwargs = {} if body is None else {"data": body, "content_type": content_type}
    response = getattr(seeded, method)(path, **kwargs, **headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "counter, delta",
    [
        ("\U0001f600" * 255, 1),
        ("x" * 255, 1),
        ("Ünïcödé-名前", 1),
        ("a.b", 1),
        ("...", 1),
        ("%2F", 1),
        ("max", 2**63 - 1),
        ("min", -(2**63)),
        ("zero", 0),
    ],
    ids=[
        "255-emoji",
        "255-ascii",
        "unicode",
        "inner-dot",
        "three-dots",
        "literal-percent",
        "int64-max",
        "int64-min",
        "zero",
    ],
)
def test_edge_values_at_the_limits_are_accepted(seeded, counter, delta):
    response = seeded.post(counter_url(NS, counter, "add-and-get"), {"delta": delta}, format="json")
    assert response.status_code == 200
    assert response.json() == {"namespace": NS, "counter": counter, "delta": delta, "applied": True, "count": delta}
    assert seeded.get(counter_url(NS, counter)).json()["count"] == delta


@pytest.mark.django_db
def test_a_batch_with_one_bad_item_names_its_index_and_applies_none(seeded):
    response = seeded.post(BATCH, batch(GOOD, GOOD, {"counter": "hits", "delta": "2"}), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_delta"
    assert response.json()["error"]["details"]["index"] == 2
    assert seeded.get(counter_url(NS, "hits")).json()["count"] == 5


@pytest.mark.django_db(transaction=True)
def test_dot_segments_and_encoded_slashes_are_refused_by_the_live_server(live_service):
    """The Django test client passes paths through untouched; a real HTTP stack could normalise
    ``.``/``..`` or decode ``%2F`` before routing, so these go over a raw socket to gunicorn."""
    seed = live_service.request(
        "POST", f"/api/v1/namespaces/{live_service.namespace}/counters/hits/add", '{"delta": 5}'
    )
    assert seed[0] == 200
    outcomes = {}
    for segment in (".", "..", "%2E", "%2E%2E", "a%2Fb", "a/b", "%00", "a%20b", "a%0Ab", "a%0Db", "hits/multiply"):
        path = f"/api/v1/namespaces/{live_service.namespace}/counters/{segment}/add"
        status, body = live_service.request("POST", path, '{"delta": 1}')
        outcomes[segment] = (status, body["error"]["code"])
    assert outcomes == {segment: (400, "invalid_name") for segment in outcomes}
    status, body = live_service.request("GET", f"/api/v1/namespaces/{live_service.namespace}/counters/hits")
    assert (status, body["count"]) == (200, 5)
    assert list(Event.objects.filter(namespace=live_service.namespace).values_list("counter", "delta")) == [("hits", 5)]


@pytest.mark.django_db
def test_a_literal_percent_sign_is_not_mistaken_for_a_byte_that_is_not_utf8(seeded):
    response = seeded.post(raw_add("a%25FFb"), '{"delta": 2}', content_type="application/json", **raw_uri("a%25FFb"))
    assert (response.status_code, response.json()["counter"]) == (200, "a%FFb")
    assert reads.get_count(Namespace.objects.get(name=NS), "a%FFb").count == 2


@pytest.mark.django_db(transaction=True)
def test_counter_segments_that_are_not_utf8_are_refused_by_the_live_server(live_service):
    """Django turns the byte 0xFF into the text "%FF", so ``a%FFb`` and ``a%25FFb`` would reach one
    counter; only the raw request target of a real server tells them apart."""
    outcomes = {}
    for segment in ("a%FFb", "a%ED%A0%80b", "a%C3b", "a%25FFb"):
        path = f"/api/v1/namespaces/{live_service.namespace}/counters/{segment}/add"
        status, body = live_service.request("POST", path, '{"delta": 1}')
        outcomes[segment] = (status, body["counter"] if status == 200 else body["error"]["code"])
    assert outcomes == {
        "a%FFb": (400, "invalid_name"),
        "a%ED%A0%80b": (400, "invalid_name"),
        "a%C3b": (400, "invalid_name"),
        "a%25FFb": (200, "a%FFb"),
    }
    assert list(Event.objects.filter(namespace=live_service.namespace).values_list("counter", "delta")) == [
        ("a%FFb", 1)
    ]


def post_chunked(live_service, path: str, chunks) -> tuple[int, dict]:
    """POST with ``Transfer-Encoding: chunked`` and no Content-Length (http.client chunks an iterable)."""
    conn = http.client.HTTPConnection("127.0.0.1", live_service.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {live_service.key}", "Content-Type": "application/json"}
        conn.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_chunked_bodies_are_read_and_held_to_the_size_limit_by_the_live_server(live_service):
    path = f"/api/v1/namespaces/{live_service.namespace}/counters/hits/add-and-get"
    status, body = post_chunked(live_service, path, iter([b'{"del', b'ta": 3}']))
    assert (status, body["count"]) == (200, 3)
    padding = (b" " * 65536 for _ in range(48))  # 3 MiB of whitespace: valid JSON, over the 2 MiB limit
    status, body = post_chunked(live_service, path, itertools.chain([b'{"delta": 4'], padding, [b"}"]))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert list(Event.objects.filter(namespace=live_service.namespace).values_list("counter", "delta")) == [("hits", 3)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, message",
    [
        ('{"delta": ' + "9" * 5001 + "}", "Must be a JSON integer."),
        (
            '{"delta": 1,}',
            "The body is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 13).",
        ),
        (b'{"delta": "\xff"}', "The body is not UTF-8 text."),
    ],
    ids=["5001-digits", "trailing-comma", "not-utf8"],
)
def test_error_messages_never_speak_of_python_internals(seeded, body, message):
    response = seeded.post(ADD, body, content_type="application/json")
    error = response.json()["error"]
    assert message in (error["message"], *error["details"].get("fields", {}).get("delta", []))
    assert not any(word in response.content for word in (b"sys.", b"int_max_str_digits", b"codec", b"Traceback"))
    assert seeded.get(counter_url(NS, "hits")).json()["count"] == 5
