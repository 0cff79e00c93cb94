"""HTTP client for the counter service's v1 REST API (see API.md).

Every mutation carries an idempotency token that is made once per logical call and resent
unchanged on every retry, so a call that is retried after a lost response is applied exactly once.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import requests

# Statuses after which the server promises nothing was applied (429, 503) or that the same token
# is still in flight (409); other 5xx may have applied, which the reused token makes harmless.
_RETRY_STATUSES = frozenset({409, 429}) | frozenset(range(500, 600))
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# Caps a single Retry-After wait, so one odd header cannot stall a caller for hours.
_MAX_RETRY_AFTER_SECONDS = 60.0


class CounterError(Exception):
    """A request the service refused (or that kept failing until retries ran out).

    ``status`` is the HTTP status (None when no response ever arrived); ``code``, ``message`` and
    ``details`` come from the error envelope ``{"error": {"code", "message", "details"}}``.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status or 'no response'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


def new_token() -> dict[str, str]:
    """A fresh idempotency token: a uuid4 plus its generation time (RFC 3339, UTC offset)."""
    return {"token": str(uuid.uuid4()), "generation_time": datetime.now(UTC).isoformat()}


def _segment(name: str) -> str:
    # A counter name may contain '?', '#', '%' or non-ASCII; it must reach the server as exactly
    # one path segment, so nothing is left unescaped.
    return quote(name, safe="")


def _check_delta(delta: int) -> None:
    # bool is an int subclass and would serialise as true/false, which the server rejects.
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError(f"delta must be an int, not {type(delta).__name__}")


class Counters:
    """Client for one service and one API key; safe to share between threads.

    Each thread gets its own ``requests.Session`` (connection reuse without sharing a pool).
    Transient failures (connection errors, timeouts, 5xx, 409, 429) are retried up to
    ``max_retries`` times with capped exponential backoff and jitter, honouring ``Retry-After``;
    any other 4xx raises ``CounterError`` at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        max_retries: int = 8,
        *,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.api_key}"
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session; the client stays usable and reconnects on demand."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER_SECONDS)
        ceiling = min(self.backoff_cap, self.backoff_base * 2**attempt)
        # "Equal jitter": never less than half the step, so a retry storm still spreads out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        """Send one logical request, retrying transient failures with the identical body.

        Returns the first 2xx response (a replay, ``Idempotent-Replayed: true``, is a 2xx too).
        """
        url = self.base_url + path
        last_error: CounterError | None = None
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt - 1, retry_after))
            retry_after = None
            try:
                response = self._session().request(method, url, json=json, params=params, timeout=self.timeout)
            except _TRANSIENT_ERRORS as exc:
                last_error = CounterError(None, "connection_error", str(exc))
                continue
            if response.status_code < 400:
                return response
            error = _error_from(response)
            if response.status_code not in _RETRY_STATUSES:
                raise error
            last_error = error
            retry_after = _retry_after(response)
        assert last_error is not None
        raise last_error

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def _paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # `next` may be absolute with a host name the server sees (behind a proxy) rather than
        # ours, so only its query string is reused, against our own base URL.
        while True:
            page = self._json("GET", path, params=params)
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("results", [])
            next_url = page.get("next")
            if not next_url:
                return
            params = dict(parse_qsl(urlsplit(next_url).query, keep_blank_values=True))

    # -- namespaces ---------------------------------------------------------------------------

    def create_namespace(self, name: str, counter_type: str, **config: Any) -> dict[str, Any]:
        """Create a namespace; ``config`` holds optional fields (ttl_seconds, rollup, ...)."""
        body = {"name": name, "counter_type": counter_type, **config}
        return self._json("POST", "/api/v1/namespaces", json=body)

    def get_namespace(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/namespaces/{_segment(name)}")

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace with all its data; raises CounterError (404) if it does not exist."""
        self._request("DELETE", f"/api/v1/namespaces/{_segment(name)}")

    def list_namespaces(self) -> Iterator[dict[str, Any]]:
        """Every namespace the key can see, following pagination lazily."""
        return self._paginate("/api/v1/namespaces", {})

    # -- counters -----------------------------------------------------------------------------

    def _counter_path(self, ns: str, counter: str) -> str:
        return f"/api/v1/namespaces/{_segment(ns)}/counters/{_segment(counter)}"

    def get(self, ns: str, counter: str) -> dict[str, Any]:
        """GetCount: ``{"namespace", "counter", "count", "consistency", "as_of"}``."""
        return self._json("GET", self._counter_path(ns, counter))

    def count(self, ns: str, counter: str) -> int:
        return int(self.get(ns, counter)["count"])

    def _mutate(self, ns: str, counter: str, action: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        idem = new_token()
        if token is not None:
            idem["token"] = token
        body["idempotency_token"] = idem
        return self._json("POST", f"{self._counter_path(ns, counter)}/{action}", json=body)

    def add(self, ns: str, counter: str, delta: int, token: str | None = None) -> dict[str, Any]:
        """AddCount, applied exactly once however often it is retried (same token each time)."""
        _check_delta(delta)
        return self._mutate(ns, counter, "add", {"delta": delta}, token)

    def add_and_get(self, ns: str, counter: str, delta: int, token: str | None = None) -> int:
        """AddAndGetCount: the count including this add (read-your-writes in every type)."""
        _check_delta(delta)
        return int(self._mutate(ns, counter, "add-and-get", {"delta": delta}, token)["count"])

    def clear(self, ns: str, counter: str, token: str | None = None) -> dict[str, Any]:
        """ClearCount: events after it count from 0."""
        return self._mutate(ns, counter, "clear", {}, token)

    def batch(self, ns: str, mutations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Apply mutations (``{"counter", "op", "delta"}``) all or nothing, in order.

        Items without an ``idempotency_token`` get a fresh one, fixed for every retry of this
        call. Returns the per-item results; ``applied: false`` marks a replay, which means the
        mutation had already been applied.
        """
        items = []
        for mutation in mutations:
            item = dict(mutation)
            if item.get("op", "add") == "add":
                _check_delta(item["delta"])
            item.setdefault("idempotency_token", new_token())
            items.append(item)
        path = f"/api/v1/namespaces/{_segment(ns)}/batch"
        return self._json("POST", path, json={"mutations": items})["results"]

    def batch_many(
        self,
        ns: str,
        mutations: Iterable[Mapping[str, Any]],
        batch_size: int = 500,
        workers: int = 4,
    ) -> int:
        """Send any number of mutations in batches of at most ``batch_size``, ``workers`` at once.

        Returns how many mutations the service acknowledged (applied or replayed). Batches may
        apply in any order relative to each other. On the first failed batch, sending stops and
        the error is raised; batches already acknowledged stay applied, so a caller that wants to
        resend the whole input safely must put its own ``idempotency_token`` on each mutation.
        """
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be positive")
        iterator = iter(mutations)
        acknowledged = 0
        # A bounded window of in-flight batches keeps memory flat for lazily generated input.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: set[Future[list[dict[str, Any]]]] = set()
            while True:
                while len(pending) < 2 * workers and (chunk := list(islice(iterator, batch_size))):
                    pending.add(pool.submit(self.batch, ns, chunk))
                if not pending:
                    return acknowledged
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        acknowledged += len(future.result())
                    except BaseException:
                        for other in pending:
                            other.cancel()
                        raise

    def list_counters(self, ns: str, prefix: str = "", limit: int | None = None) -> Iterator[dict]:
        """Every counter whose name starts with ``prefix``, by name, following ``next`` cursors.

        ``limit`` is the page size requested from the server (its default when None).
        """
        params: dict[str, Any] = {"prefix": prefix}
        if limit is not None:
            params["limit"] = limit
        return self._paginate(f"/api/v1/namespaces/{_segment(ns)}/counters", params)


def _error_from(response: requests.Response) -> CounterError:
    try:
        error = response.json()["error"]
        return CounterError(
            response.status_code,
            str(error.get("code", "unknown")),
            str(error.get("message", "")),
            error.get("details") or {},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not the service's envelope (a proxy's HTML page, an empty body).
        return CounterError(response.status_code, "http_error", response.text[:200])


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
