"""API policy in one place: bearer-key authentication, roles and namespace scopes."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from counters.models import ApiKey, hash_key

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


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise AuthenticationFailed("Use 'Authorization: Bearer <api-key>'.")
        key = ApiKey.objects.filter(key_hash=hash_key(raw.strip()), revoked_at__isnull=True).first()
        if key is None:
            raise AuthenticationFailed("Unknown or revoked API key.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
            ).update(last_used_at=now)
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
