"""API policy in one place: bearer-key authentication, roles and namespace scopes."""

from __future__ import annotations

import datetime as dt

from django.db import InterfaceError, OperationalError, connection
from django.db.models import Q
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from counters.models import ApiKey, Namespace, hash_key
from counters.names import is_valid_namespace

# last_used_at is written at most this often per key, so authentication is not a write per request.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class KeyHolder:
    """``request.user`` of a request authenticated by an API key (``request.auth`` is the key)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: ApiKey):
        self.key = key

    def __str__(self) -> str:
        return f"key:{self.key.prefix}"


_KEY_COLUMNS = [field.column for field in ApiKey._meta.concrete_fields]
_KEY_FIELDS = [field.attname for field in ApiKey._meta.concrete_fields]
_NAMESPACE_COLUMNS = [field.column for field in Namespace._meta.concrete_fields]
_NAMESPACE_FIELDS = [field.attname for field in Namespace._meta.concrete_fields]
# The key and the namespace its request path names, in one round trip and without the ORM's query
# compilation (which cost a third of a no-op request's CPU).
_LOOKUP = (
    f"SELECT {', '.join('k.' + c for c in _KEY_COLUMNS)}, {', '.join('n.' + c for c in _NAMESPACE_COLUMNS)} "
    f"FROM {ApiKey._meta.db_table} k LEFT JOIN {Namespace._meta.db_table} n ON n.name = %s "
    "WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


def lookup(raw_key: str, namespace: str | None) -> tuple[ApiKey | None, Namespace | None]:
    """The live key of ``raw_key`` and, when it exists, the namespace named ``namespace``.

    The first query of every API request, so it is where a connection that died while idle
    (PostgreSQL restarted; there is no per-request health check) shows: being a read, it is
    redone once on a new connection instead of failing the request with 503.
    """
    try:
        row = _fetch(raw_key, namespace)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        row = _fetch(raw_key, namespace)
    if row is None:
        return None, None
    key = ApiKey.from_db(connection.alias, _KEY_FIELDS, row[: len(_KEY_COLUMNS)])
    namespace_row = row[len(_KEY_COLUMNS) :]
    if namespace_row[0] is None:
        return key, None
    return key, Namespace.from_db(connection.alias, _NAMESPACE_FIELDS, namespace_row)


def _fetch(raw_key: str, namespace: str | None) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(_LOOKUP, [namespace, hash_key(raw_key)])
        return cursor.fetchone()


class ApiKeyAuthentication(BaseAuthentication):
    """Bearer keys. On a namespace's paths the namespace row comes with the key (``lookup``) and
    waits in ``request.prefetched_namespace`` for ``ApiView.namespace``, which applies the scope."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise AuthenticationFailed("Use 'Authorization: Bearer <api-key>'.")
        path_namespace = request.parser_context.get("kwargs", {}).get("ns")
        key, namespace = lookup(raw.strip(), path_namespace if is_valid_namespace(path_namespace) else None)
        if key is None:
            raise AuthenticationFailed("Unknown or revoked API key.")
        request.prefetched_namespace = namespace
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
            ).update(last_used_at=now)
            key.last_used_at = now
        return KeyHolder(key), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class DenyAll(BasePermission):
    """The default: a view that does not declare its roles serves nobody."""

    def has_permission(self, request, view) -> bool:
        return False


class HasRole(BasePermission):
    """Allows a request when its key's role reaches ``view.required_roles[method]``."""

    message = "This API key's role does not allow this operation."

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            return False
        if not hasattr(view, request.method.lower()):
            return True  # an unsupported method: the view answers 405
        role = getattr(view, "required_roles", {}).get(request.method)
        if role is None and request.method in ("HEAD", "OPTIONS"):
            role = view.required_roles.get("GET")
        return role is not None and request.auth.has_role(role)
