"""Read-only admin of checkpoints (one row per counter, so potentially huge), with the actions to
force a rollup or recount a counter from its raw events."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import F

from counters.admin import (
    CappedCountPaginator,
    CounterSearchMixin,
    NamespaceListFilter,
    ReadOnlyAdminMixin,
    force_rollup,
    recount,
)
from rollups.models import Checkpoint, SweepState


class TailFilter(admin.SimpleListFilter):
    title = "un-rolled tail"
    parameter_name = "tail"

    def lookups(self, request, model_admin):
        return [("yes", "has writes after its checkpoint"), ("no", "caught up")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(last_write_ts__gt=F("last_rollup_ts"))
        if self.value() == "no":
            return queryset.exclude(last_write_ts__gt=F("last_rollup_ts"))
        return queryset


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, CounterSearchMixin, admin.ModelAdmin):
    list_display = (
        "namespace",
        "counter",
        "last_rollup_count",
        "last_rollup_ts",
        "last_write_ts",
        "has_tail",
        "updated_at",
    )
    list_filter = (NamespaceListFilter, TailFilter)
    # The unique (namespace, counter) index serves this order.
    ordering = ("namespace", "counter")
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    actions = (force_rollup, recount)

    @admin.display(boolean=True, description="tail")
    def has_tail(self, obj: Checkpoint) -> bool:
        return obj.last_write_ts is not None and obj.last_write_ts > obj.last_rollup_ts


@admin.register(SweepState)
class SweepStateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("namespace", "swept_until")
