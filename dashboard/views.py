"""The dashboard page and the JSON it polls; staff only (others go to the admin login)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from counters.models import Namespace
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
    if name is not None and not Namespace.objects.filter(name=name).exists():
        return JsonResponse({"error": f"no namespace {name!r}"}, status=404)
    return JsonResponse(snapshot.overview(name))


@never_cache
@staff_member_required
def lookup(request: HttpRequest) -> JsonResponse:
    """One counter: its count as GetCount answers, its checkpoint, un-rolled tail and recent events."""
    namespace = Namespace.objects.filter(name=request.GET.get("namespace", "")).first()
    counter = request.GET.get("counter", "")
    if namespace is None:
        return JsonResponse({"error": "unknown namespace"}, status=404)
    if not counter:
        return JsonResponse({"error": "give a counter name"}, status=400)
    return JsonResponse(snapshot.counter(namespace, counter))
