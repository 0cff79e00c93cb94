"""Benchmark-only routes, mounted under /bench/ when settings.BENCHMARK_ENDPOINTS is true."""

from django.urls import path

from bench import views

urlpatterns = [
    path("noop", views.NoopView.as_view(), name="bench-noop"),
    path("rows/<str:name>", views.RowCounterView.as_view(), name="bench-row-counter"),
]
