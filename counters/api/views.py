"""REST views (API.md): parse, authorize, call a service, render."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from urllib.parse import unquote_to_bytes, urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from counters import reads, services
from counters.api import batch
from counters.api import serializers as s
from counters.api.auth import HasRole
from counters.exceptions import InvalidRequest, NamespaceNotFound, PayloadTooLarge
from counters.models import Namespace
from counters.names import COUNTER_MAX_LENGTH, counter_name_problem, is_valid_namespace

# Which serializer fields decide the error code of a 400 (API.md's table).
_FIELD_CODES = {
    "delta": "invalid_delta",
    "idempotency_token": "invalid_token",
    "counter": "invalid_name",
    "name": "invalid_name",
}


def invalid(errors: dict, index: int | None = None) -> InvalidRequest:
    code = next((_FIELD_CODES[field] for field in errors if field in _FIELD_CODES), "invalid_request")
    details = {"fields": errors}
    if index is not None:
        details["index"] = index
    return InvalidRequest("The request is invalid.", details, code=code)


def validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise invalid(serializer.errors)
    return serializer


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> str:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("Invalid cursor.", {"cursor": value}) from None
    # PostgreSQL text cannot hold NUL: compared against names it would be a 500, not a page.
    if "\x00" in decoded:
        raise InvalidRequest("Invalid cursor.", {"cursor": value})
    return decoded


def name_prefix(request: Request) -> str:
    prefix = request.query_params.get("prefix", "")
    if "\x00" in prefix or len(prefix) > COUNTER_MAX_LENGTH:
        raise InvalidRequest(
            f"prefix must be at most {COUNTER_MAX_LENGTH} code points without NUL.", {"prefix": prefix[:300]}
        )
    return prefix


def page_limit(request: Request) -> int:
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000.", {"limit": raw})
    return int(raw)


def next_url(request: Request, last: str | None, **params: str) -> str | None:
    if last is None:
        return None
    query = {key: value for key, value in params.items() if value} | {
        "limit": request.query_params.get("limit", "100"),
        "cursor": encode_cursor(last),
    }
    return request.build_absolute_uri(f"{request.path}?{urlencode(query)}")


class ApiView(APIView):
    permission_classes = [HasRole]
    required_roles: dict[str, str] = {}

    def initial(self, request: Request, *args, **kwargs) -> None:
        """After authentication, roles and rate limits: on a counter path, an invalid counter name
        is 400 invalid_name whatever the method. Here, no counter view can skip the check, and
        ``POST .../counters/hits/multiply`` (the counter "hits/multiply") is not a 405."""
        super().initial(request, *args, **kwargs)
        if "name" in kwargs:
            check_counter(request, kwargs["name"])

    def namespace(self, name: str) -> Namespace:
        """The namespace if it exists and this key reaches it; otherwise 404, so a key cannot
        learn of namespaces outside its scope."""
        if not is_valid_namespace(name) or not self.request.auth.reaches(name):
            raise NamespaceNotFound(f"No namespace {name!r}.")
        if name == self.kwargs.get("ns") and hasattr(self.request, "prefetched_namespace"):
            # Read with the key, in the same round trip (auth.lookup); None: it does not exist.
            if self.request.prefetched_namespace is None:
                raise NamespaceNotFound(f"No namespace {name!r}.")
            return self.request.prefetched_namespace
        try:
            return Namespace.objects.get(name=name)
        except Namespace.DoesNotExist:
            raise NamespaceNotFound(f"No namespace {name!r}.") from None


def raw_path_is_utf8(request: Request) -> bool:
    """Whether the request target's path, percent-decoded, is strict UTF-8.

    Django re-percent-encodes bytes that are not UTF-8 (``a%FFb`` arrives as the name "a%FFb",
    the same as ``a%25FFb``) and overwrites PATH_INFO with that, so only the raw target the server
    passes on (gunicorn's RAW_URI, uWSGI's and mod_wsgi's REQUEST_URI) still tells them apart.
    WSGI hands it over as latin-1 text of the request line's bytes.
    """
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI") or ""
    try:
        unquote_to_bytes(raw.partition("?")[0].encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return False
    return True


def check_counter(request: Request, name: str) -> None:
    """400 invalid_name unless ``name``, the counter segment of the path, is a valid counter name
    that the client sent as UTF-8."""
    problem = counter_name_problem(name) or (None if raw_path_is_utf8(request) else "must be UTF-8")
    if problem:
        raise InvalidRequest(f"Invalid counter name: {problem}.", {"counter": name}, code="invalid_name")


def request_token(request: Request, body_token: services.Token | None) -> services.Token | None:
    if body_token is not None:
        return body_token
    header = request.headers.get("Idempotency-Key")
    if header is None:
        return None
    if not 1 <= len(header) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.", code="invalid_token")
    return services.Token(header, dt.datetime.now(dt.UTC))


def mutation_response(outcome: services.Outcome) -> Response:
    headers = {} if outcome.applied else {"Idempotent-Replayed": "true"}
    return Response(outcome.body, status=outcome.status, headers=headers)


class NamespaceListView(ApiView):
    required_roles = {"GET": "read", "POST": "admin"}

    @extend_schema(
        operation_id="listNamespaces",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("cursor", str)],
        responses=s.NamespaceListSerializer,
    )
    def get(self, request: Request) -> Response:
        limit = page_limit(request)
        rows = Namespace.objects.order_by("name")
        if request.auth.namespaces:
            rows = rows.filter(name__in=request.auth.namespaces)
        if cursor := request.query_params.get("cursor"):
            rows = rows.filter(name__gt=decode_cursor(cursor))
        page = list(rows[: limit + 1])
        last = page[limit - 1].name if len(page) > limit else None
        return Response(
            {
                "results": [s.NamespaceSerializer(ns).data for ns in page[:limit]],
                "next": next_url(request, last),
            }
        )

    @extend_schema(
        operation_id="createNamespace", request=s.NamespaceSerializer, responses={201: s.NamespaceSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = validated(s.NamespaceSerializer, request.data)
        # Before the insert: a key must not learn from a 409 that a namespace outside its scope exists.
        if not request.auth.reaches(serializer.validated_data["name"]):
            raise PermissionDenied("This API key may only create namespaces within its scope.")
        namespace = services.create_namespace(serializer.model_fields())
        return Response(s.NamespaceSerializer(namespace).data, status=201)


class NamespaceDetailView(ApiView):
    required_roles = {"GET": "read", "PATCH": "admin", "DELETE": "admin"}

    @extend_schema(operation_id="getNamespace", responses=s.NamespaceSerializer)
    def get(self, request: Request, ns: str) -> Response:
        return Response(s.NamespaceSerializer(self.namespace(ns)).data)

    @extend_schema(operation_id="updateNamespace", request=s.NamespaceSerializer, responses=s.NamespaceSerializer)
    def patch(self, request: Request, ns: str) -> Response:
        namespace = self.namespace(ns)
        serializer = validated(s.NamespaceSerializer, request.data, instance=namespace, partial=True)
        fields = serializer.model_fields()
        for field, value in fields.items():
            setattr(namespace, field, value)
        namespace.save(update_fields=list(fields) or None)
        return Response(s.NamespaceSerializer(namespace).data)

    @extend_schema(operation_id="deleteNamespace", responses={204: None})
    def delete(self, request: Request, ns: str) -> Response:
        services.delete_namespace(self.namespace(ns))
        return Response(status=204)


class CounterView(ApiView):
    required_roles = {"GET": "read"}

    @extend_schema(operation_id="getCount", responses=s.CountSerializer)
    def get(self, request: Request, ns: str, name: str) -> Response:
        namespace = self.namespace(ns)
        result = reads.get_count(namespace, name)
        return Response(
            {
                "namespace": namespace.name,
                "counter": name,
                "count": result.count,
                "consistency": namespace.counter_type,
                "as_of": s.format_time(result.as_of),
            }
        )


class AddView(ApiView):
    required_roles = {"POST": "write"}
    operation = "add"

    @extend_schema(operation_id="addCount", request=s.AddSerializer, responses=s.AddResponseSerializer)
    def post(self, request: Request, ns: str, name: str) -> Response:
        namespace = self.namespace(ns)
        delta, body_token = batch.parse_add(request.data)
        mutation = services.Mutation(name, "add", delta, request_token(request, body_token))
        [outcome] = services.mutate(namespace, [mutation], self.operation)
        return mutation_response(outcome)


class AddAndGetView(AddView):
    operation = "add_and_get"

    @extend_schema(operation_id="addAndGetCount", request=s.AddSerializer, responses=s.AddAndGetResponseSerializer)
    def post(self, request: Request, ns: str, name: str) -> Response:
        return super().post(request, ns, name)


class ClearView(ApiView):
    required_roles = {"POST": "write"}

    @extend_schema(operation_id="clearCount", request=s.ClearSerializer, responses=s.ClearResponseSerializer)
    def post(self, request: Request, ns: str, name: str) -> Response:
        namespace = self.namespace(ns)
        body_token = batch.parse_clear(request.data)
        mutation = services.Mutation(name, "clear", 0, request_token(request, body_token))
        [outcome] = services.mutate(namespace, [mutation], "clear")
        return mutation_response(outcome)


class BatchView(ApiView):
    required_roles = {"POST": "write"}

    @extend_schema(operation_id="batch", request=s.BatchSerializer, responses=s.BatchResponseSerializer)
    def post(self, request: Request, ns: str) -> Response:
        namespace = self.namespace(ns)
        items = batch.parse_items(request.data)
        if len(items) > namespace.max_batch_size:
            raise PayloadTooLarge(
                f"A batch holds at most {namespace.max_batch_size} mutations.",
                {"max_batch_size": namespace.max_batch_size, "size": len(items)},
            )
        mutations = [batch.parse_item(index, item) for index, item in enumerate(items)]
        outcomes = services.mutate(namespace, mutations, "batch")
        return Response({"results": [{"counter": o.counter, "applied": o.applied} for o in outcomes]})


class CounterListView(ApiView):
    required_roles = {"GET": "read"}

    @extend_schema(
        operation_id="listCounters",
        parameters=[
            OpenApiParameter("prefix", str),
            OpenApiParameter("limit", int),
            OpenApiParameter("cursor", str),
        ],
        responses=s.CounterListSerializer,
    )
    def get(self, request: Request, ns: str) -> Response:
        namespace = self.namespace(ns)
        limit = page_limit(request)
        prefix = name_prefix(request)
        cursor = request.query_params.get("cursor")
        after = decode_cursor(cursor) if cursor else None
        page = reads.list_counts(namespace, prefix, after, limit + 1)
        last = page[limit - 1].counter if len(page) > limit else None
        return Response(
            {
                "results": [
                    {"counter": c.counter, "count": c.count, "as_of": s.format_time(c.as_of)} for c in page[:limit]
                ],
                "next": next_url(request, last, prefix=prefix),
            }
        )
