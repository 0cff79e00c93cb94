"""The dashboard page and the JSON it polls; staff only (others go to the admin login)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from counters.models import Namespace
from counters.names import counter_name_problem, is_valid_namespace
from dashboard import snapshot


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/index.html",
        {"namespaces": Namespace.objects.values_list("name", flat=True), "refresh_ms": snapshot.REFRESH_MS},
    )


@never_cache
@staff_member_required
def data(request: HttpRequest) -> JsonResponse:
    """The health snapshot of one namespace (``?namespace=``) or of all of them."""
    name = request.GET.get("namespace") or None
    if name is not None and not is_valid_namespace(name):
        return _invalid_namespace(name)
    if name is not None and not Namespace.objects.filter(name=name).exists():
        return JsonResponse({"error": f"no namespace {name!r}"}, status=404)
    return JsonResponse(snapshot.overview(name))


@never_cache
@staff_member_required
def lookup(request: HttpRequest) -> JsonResponse:
    """One counter: its count as GetCount answers, its checkpoint, un-rolled tail and recent events."""
    name = request.GET.get("namespace", "")
    counter = request.GET.get("counter", "")
    if not is_valid_namespace(name):
        return _invalid_namespace(name)
    problem = counter_name_problem(counter)
    if problem is not None:
        return JsonResponse({"error": f"invalid counter name: {problem}"}, status=400)
    namespace = Namespace.objects.filter(name=name).first()
    if namespace is None:
        return JsonResponse({"error": "unknown namespace"}, status=404)
    return JsonResponse(snapshot.counter(namespace, counter))


def _invalid_namespace(name: str) -> JsonResponse:
    # Checked before any query: PostgreSQL refuses a NUL in a string literal with a 500.
    return JsonResponse({"error": f"invalid namespace name {name!r}"}, status=400)
