"""Prometheus metrics; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set (gunicorn workers)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("counter_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "counter_http_request_seconds",
    "HTTP request latency",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter("counter_events_ingested_total", "Mutations applied", ["namespace", "counter_type"])
ROLLUP_BATCHES = Counter("counter_rollup_batches_total", "Rollup batches run", ["namespace"])
ROLLUP_EVENTS = Counter("counter_rollup_events_total", "Events folded into checkpoints", ["namespace"])
ROLLUP_SECONDS = Histogram("counter_rollup_batch_seconds", "Rollup batch latency", ["namespace"])
BACKPRESSURE = Counter("counter_backpressure_total", "Requests refused with 429", ["namespace"])
SWEPT = Counter("counter_stale_swept_total", "Counters re-enqueued by the stale sweep")
DRIFT = Counter(
    "counter_checkpoint_drift_total", "Checkpoints that differed from a recount of their events", ["namespace"]
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
