"""The client library's retry and token rules, against a scripted HTTP server on 127.0.0.1.

No Django and no database: these tests exercise only ``counterclient`` and the demo's truth.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from counterclient import CounterError, Counters
from demo.flights import expected_counts, flight_mutations

# One scripted reply: (status, headers, body), "drop" to close the socket without answering, or
# "slow" to answer 200 only after the client has timed out.
Reply = tuple[int, dict[str, str], Any] | str


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client hanging up on a deliberately slow reply is part of the script, not a failure.
        pass


class FakeService:
    """Answers each request with the next scripted reply (the last one repeats) and records it."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with service.lock:
                    service.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(raw) if raw else None,
                        }
                    )
                    index = len(service.requests) - 1
                    reply = service.script[min(index, len(service.script) - 1)]
                if reply == "drop":
                    self.close_connection = True
                    return
                if reply == "slow":
                    time.sleep(0.5)
                    reply = ADDED
                status, headers, body = reply
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService()
    yield fake
    fake.close()


def make_client(service: FakeService, **kwargs: Any) -> Counters:
    kwargs.setdefault("max_retries", 8)
    kwargs.setdefault("timeout", 2)
    return Counters(service.url, "k3y", backoff_base=0.001, backoff_cap=0.01, **kwargs)


def error(status: int, code: str, **details: Any) -> Reply:
    return (status, {}, {"error": {"code": code, "message": code, "details": details}})


ADDED = (200, {}, {"namespace": "ns", "counter": "c", "delta": 5, "applied": True})


def test_retry_with_same_token_counts_once(service: FakeService) -> None:
    service.script = [
        error(503, "unavailable"),
        (429, {"Retry-After": "0"}, {"error": {"code": "backpressure", "message": "slow down"}}),
        "drop",
        error(409, "idempotency_in_progress"),
        ADDED,
    ]
    result = make_client(service).add("ns", "c", 5)

    assert result == ADDED[2]
    assert len(service.requests) == 5
    bodies = [r["body"] for r in service.requests]
    assert all(body == bodies[0] for body in bodies)
    token = bodies[0]["idempotency_token"]
    assert len(token["token"]) == 36
    assert token["generation_time"].endswith("+00:00")
    assert bodies[0]["delta"] == 5
    assert all(r["headers"]["Authorization"] == "Bearer k3y" for r in service.requests)


def test_timed_out_request_is_retried_with_the_same_token(service: FakeService) -> None:
    replayed = (200, {"Idempotent-Replayed": "true"}, ADDED[2])
    service.script = ["slow", replayed]
    assert make_client(service, timeout=0.2).add("ns", "c", 5) == ADDED[2]
    first, second = (r["body"] for r in service.requests)
    assert first == second


def test_each_logical_call_gets_a_new_token(service: FakeService) -> None:
    service.script = [ADDED]
    client = make_client(service)
    client.add("ns", "c", 5)
    client.add("ns", "c", 5)
    tokens = [r["body"]["idempotency_token"]["token"] for r in service.requests]
    assert tokens[0] != tokens[1]


def test_replay_is_success(service: FakeService) -> None:
    body = {"namespace": "ns", "counter": "c", "delta": 2, "applied": True, "count": 7}
    service.script = [(200, {"Idempotent-Replayed": "true"}, body)]
    assert make_client(service).add_and_get("ns", "c", 2, token="mine") == 7
    assert service.requests[0]["body"]["idempotency_token"]["token"] == "mine"
    assert service.requests[0]["path"] == "/api/v1/namespaces/ns/counters/c/add-and-get"


def test_client_errors_raise_without_retry(service: FakeService) -> None:
    service.script = [error(422, "idempotency_key_reused", token="t")]
    with pytest.raises(CounterError) as caught:
        make_client(service).add("ns", "c", 1)
    assert caught.value.status == 422
    assert caught.value.code == "idempotency_key_reused"
    assert caught.value.details == {"token": "t"}
    assert len(service.requests) == 1


def test_gives_up_after_max_retries(service: FakeService) -> None:
    service.script = [error(503, "unavailable")]
    with pytest.raises(CounterError) as caught:
        make_client(service, max_retries=3).clear("ns", "c")
    assert caught.value.status == 503
    assert len(service.requests) == 4
    assert len({r["body"]["idempotency_token"]["token"] for r in service.requests}) == 1


def test_non_envelope_error_body_is_still_a_counter_error(service: FakeService) -> None:
    service.script = [(400, {}, ["not", "an", "envelope"])]
    with pytest.raises(CounterError) as caught:
        make_client(service).get("ns", "c")
    assert (caught.value.status, caught.value.code) == (400, "http_error")


def test_counter_name_is_one_percent_encoded_segment(service: FakeService) -> None:
    service.script = [(200, {}, {"count": 3})]
    assert make_client(service).count("ns", "a/b c%?#é") == 3
    assert service.requests[0]["path"] == "/api/v1/namespaces/ns/counters/a%2Fb%20c%25%3F%23%C3%A9"


def test_batch_tokens_are_per_item_and_stable_across_retries(service: FakeService) -> None:
    results = [{"counter": "a", "applied": True}, {"counter": "a", "applied": True}]
    service.script = ["drop", (200, {}, {"results": results})]
    mutations = [
        {"counter": "a", "op": "add", "delta": 1},
        {"counter": "a", "op": "add", "delta": 1},
    ]
    assert make_client(service).batch("ns", mutations) == results

    first, second = (r["body"]["mutations"] for r in service.requests)
    assert first == second
    assert first[0]["idempotency_token"] != first[1]["idempotency_token"]
    assert "idempotency_token" not in mutations[0]


def test_batch_many_splits_and_counts_acknowledged(service: FakeService) -> None:
    service.script = [(200, {}, {"results": [{"applied": True}] * 3})]
    mutations = ({"counter": f"c{i}", "delta": i} for i in range(9))
    sent = make_client(service).batch_many("ns", mutations, batch_size=3, workers=2)
    assert sent == 9
    sizes = sorted(len(r["body"]["mutations"]) for r in service.requests)
    assert sizes == [3, 3, 3]
    names = sorted(m["counter"] for r in service.requests for m in r["body"]["mutations"])
    assert names == sorted(f"c{i}" for i in range(9))


def test_batch_rejects_non_integer_delta(service: FakeService) -> None:
    with pytest.raises(TypeError):
        make_client(service).batch("ns", [{"counter": "a", "delta": True}])
    assert service.requests == []


def test_list_counters_follows_next_cursor(service: FakeService) -> None:
    service.script = [
        (
            200,
            {},
            {
                "results": [{"counter": "a", "count": 1}],
                "next": "http://elsewhere/x?cursor=p2&prefix=&limit=1",
            },
        ),
        (200, {}, {"results": [{"counter": "b", "count": 2}], "next": None}),
    ]
    listed = list(make_client(service).list_counters("ns"))
    assert [c["counter"] for c in listed] == ["a", "b"]
    assert service.requests[1]["path"].startswith("/api/v1/namespaces/ns/counters?")
    assert "cursor=p2" in service.requests[1]["path"]


def row(carrier: str, origin: str, dest: str, day: str, tailnum: str, dep_delay: str) -> dict[str, str]:
    year, month, dom = day.split("-")
    return {
        "year": year,
        "month": month,
        "day": dom,
        "carrier": carrier,
        "origin": origin,
        "dest": dest,
        "tailnum": tailnum,
        "dep_delay": dep_delay,
    }


ROWS = [
    row("UA", "EWR", "IAH", "2013-1-1", "N14228", "2"),
    row("UA", "LGA", "IAH", "2013-1-1", "N24211", "-4"),
    row("AA", "JFK", "MIA", "2013-12-31", "NA", "NA"),
    row("UA", "EWR", "IAH", "2013-1-2", "N14228", ""),
]


def test_truth_from_hand_written_rows() -> None:
    assert expected_counts(ROWS) == {
        "carrier:UA": 3,
        "carrier:AA": 1,
        "origin:EWR": 2,
        "origin:LGA": 1,
        "origin:JFK": 1,
        "route:EWR-IAH": 2,
        "route:LGA-IAH": 1,
        "route:JFK-MIA": 1,
        "day:2013-01-01": 2,
        "day:2013-01-02": 1,
        "day:2013-12-31": 1,
        "plane:N14228": 2,
        "plane:N24211": 1,
        "delay:UA": -2,
    }


def test_replayed_mutations_sum_to_the_truth() -> None:
    totals: Counter[str] = Counter()
    for mutation in flight_mutations(ROWS):
        totals[mutation["counter"]] += mutation["delta"]
    assert dict(totals) == expected_counts(ROWS)
