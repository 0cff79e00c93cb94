"""Admin of namespaces, API keys and the (read-only) event log.

The event table may hold hundreds of millions of rows: its changelist never counts it
(``CappedCountPaginator``), lists namespaces from the namespace table rather than from DISTINCT over
events, orders by the primary key's index and searches a counter by exact name or ``prefix*``
(both use the ``(namespace, counter, event_time)`` index).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from counters import services
from counters.models import ApiKey, CounterType, Event, Namespace
from rollups import health

# Admin actions touch at most this many counters, so "select all" over millions cannot run away.
ACTION_LIMIT = 1000


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP`` matching rows (a LIMITed scan); past that, reports the planner's
    estimate of the whole table instead of running COUNT(*) over it."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        capped = self.object_list[: self.CAP + 1].count()
        if capped <= self.CAP:
            return capped
        return max(capped, estimated_rows(self.object_list.model._meta.db_table))


def estimated_rows(table: str) -> int:
    """Rows of ``table`` (with its partitions) from pg_class statistics: no scan."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT COALESCE(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c
            WHERE c.oid = %s::regclass OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)
            """,
            [table, table],
        )
        return cursor.fetchone()[0]


class NamespaceListFilter(admin.SimpleListFilter):
    """Namespaces from their own small table, not ``SELECT DISTINCT`` over a huge one."""

    title = "namespace"
    parameter_name = "namespace"

    def lookups(self, request, model_admin):
        names = Namespace.objects.exclude(counter_type=CounterType.BEST_EFFORT).values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(namespace=self.value()) if self.value() else queryset


class CounterSearchMixin:
    """Search by counter: ``name`` is an exact match, ``prefix*`` a prefix match (index-friendly;
    no ``icontains``, which would scan)."""

    search_fields = ("counter",)
    search_help_text = "Counter name (exact), or a prefix followed by * ; pick a namespace on the right."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.endswith("*"):
            return queryset.filter(counter__startswith=term[:-1]), False
        return queryset.filter(counter=term), False


def force_rollup(modeladmin, request, rows: QuerySet) -> None:
    from rollups import pipeline

    by_namespace = _counters_by_namespace(rows)
    folded = 0
    for namespace in Namespace.objects.filter(name__in=by_namespace):
        folded += pipeline.rollup(namespace, by_namespace[namespace.name]).events
    total = sum(len(counters) for counters in by_namespace.values())
    modeladmin.message_user(request, f"Rolled up {total} counters ({folded} events folded).", messages.SUCCESS)


force_rollup.short_description = "Force a rollup of the selected counters"


def recount(modeladmin, request, rows: QuerySet) -> None:
    from rollups import audit

    by_namespace = _counters_by_namespace(rows)
    statuses: dict[str, int] = {}
    for namespace in Namespace.objects.filter(name__in=by_namespace):
        for counter in by_namespace[namespace.name]:
            result = audit.recount(namespace, counter, repair=True)
            statuses[result.status] = statuses.get(result.status, 0) + 1
            if result.status in (audit.DRIFT, audit.REPAIRED):
                modeladmin.message_user(
                    request,
                    f"Recount of {namespace.name}/{counter}: checkpoint held {result.stored}, "
                    f"events sum to {result.recounted} ({result.status}).",
                    messages.WARNING,
                )
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    modeladmin.message_user(request, f"Recounted from raw events: {summary or 'nothing'}.", messages.SUCCESS)


recount.short_description = "Recount the selected counters from raw events (repairs drift)"


def _counters_by_namespace(rows: QuerySet) -> dict[str, list[str]]:
    by_namespace: dict[str, set[str]] = {}
    for namespace, counter in rows.order_by().values_list("namespace", "counter").distinct()[:ACTION_LIMIT]:
        by_namespace.setdefault(namespace, set()).add(counter)
    return {namespace: sorted(counters) for namespace, counters in by_namespace.items()}


class NamespaceForm(forms.ModelForm):
    class Meta:
        model = Namespace
        fields = (
            "name",
            "counter_type",
            "ttl_seconds",
            "retention_days",
            "accept_limit_seconds",
            "idempotency_window_seconds",
            "max_batch_size",
            "rollup_num_queues",
            "rollup_coalesce_ms",
            "rollup_batch_size",
        )

    def clean(self):
        cleaned = super().clean()
        counter_type = cleaned.get("counter_type") or (self.instance.counter_type if self.instance.pk else None)
        if cleaned.get("ttl_seconds") is not None and counter_type != CounterType.BEST_EFFORT:
            self.add_error("ttl_seconds", "Only best_effort namespaces expire counters.")
        return cleaned


class ReadOnlyAdminMixin:
    """For tables only the service writes (events, checkpoints, sweep state): view, never edit."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Namespace)
class NamespaceAdmin(admin.ModelAdmin):
    form = NamespaceForm
    list_display = ("name", "counter_type", "retention_days", "accept_limit_seconds", "rollup_num_queues", "created_at")
    list_filter = ("counter_type",)
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "counter_type")}),
        ("best_effort", {"fields": ("ttl_seconds",)}),
        ("Event log (eventual, accurate)", {"fields": ("retention_days", "accept_limit_seconds")}),
        ("Requests", {"fields": ("idempotency_window_seconds", "max_batch_size")}),
        ("Rollups", {"fields": ("rollup_num_queues", "rollup_coalesce_ms", "rollup_batch_size")}),
    )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        return ((None, {"fields": ("live_state", "created_at")}),) + self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return ("name", "counter_type", "live_state", "created_at") if obj else ()

    @admin.display(description="live state")
    def live_state(self, obj: Namespace) -> str:
        if not obj.uses_event_log:
            return "best_effort: counters live in Redis only; no checkpoints or rollup queues."
        backlog = health.backlog(obj.name)
        stale = health.stale_checkpoints(obj.name)
        checkpointed = health.checkpointed(obj.name)
        lag = [health.percentile(backlog.lags, q) for q in (0.5, 0.99, 1.0)]
        rows = [
            ("checkpointed counters", f"{checkpointed}{'+' if checkpointed >= health.COUNT_CAP else ''}"),
            ("rollup backlog", f"{backlog.depth} counters ({backlog.never_rolled} never rolled up)"),
            ("queue depths", ", ".join(f"q{i}: {d}" for i, d in sorted(backlog.depths.items())) or "empty"),
            ("oldest trigger due", backlog.oldest_due.isoformat() if backlog.oldest_due else "nothing queued"),
            ("rollup lag p50 / p99 / max", " / ".join("–" if v is None else f"{v:.1f} s" for v in lag)),
            ("stale checkpoints", f"{len(stale)}{'+' if len(stale) >= health.STALE_LIMIT else ''}"),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        url = reverse("dashboard:index")
        return format_html('<table>{}</table><p><a href="{}">Dashboard</a></p>', table, url)

    def delete_model(self, request, obj: Namespace) -> None:
        services.delete_namespace(obj)

    def delete_queryset(self, request, queryset: QuerySet) -> None:
        for namespace in queryset:
            services.delete_namespace(namespace)


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "role", "namespaces", "rate_limit_per_second")

    def clean_namespaces(self):
        names = self.cleaned_data["namespaces"]
        unknown = sorted(set(names) - set(Namespace.objects.filter(name__in=names).values_list("name", flat=True)))
        if unknown:
            raise forms.ValidationError(f"Unknown namespaces: {', '.join(unknown)}.")
        return names


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Creating a key shows its secret once, on the page after saving; only its hash is stored."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "role",
        "scope",
        "rate_limit_per_second",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("role", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    @admin.display(description="namespaces")
    def scope(self, obj: ApiKey) -> str:
        return ", ".join(obj.namespaces) or "all"

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = ApiKey.generate(obj.name, role=obj.role, namespaces=obj.namespaces)
        ApiKey.objects.filter(pk=key.pk).update(rate_limit_per_second=obj.rate_limit_per_second)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj.raw_secret = raw

    def response_add(self, request, obj: ApiKey, post_url_continue=None):
        # The secret goes into this one response and nowhere else (not a message in the session).
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "secret": obj.raw_secret,
            "title": f"API key {obj.name} created",
        }
        return TemplateResponse(request, "admin/counters/apikey/created.html", context)

    @admin.action(description="Revoke the selected keys (they stop working at once)")
    def revoke(self, request, queryset: QuerySet) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} keys.", messages.SUCCESS)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, CounterSearchMixin, admin.ModelAdmin):
    list_display = ("id", "namespace", "counter", "kind", "delta", "event_time")
    list_filter = (NamespaceListFilter, "kind")
    ordering = ("-id",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = (force_rollup, recount)
