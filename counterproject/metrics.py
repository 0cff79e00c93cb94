"""Prometheus metrics; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set (gunicorn workers).

Counters and histograms are written by the process that observes them (web, worker) and merged at
scrape time. Queue depth and lag are not: they are computed at scrape time from Redis and
checkpoints by ``PipelineCollector``, so every web process reports the same current values.

A labelled counter has no series until its first increment, and an alert or a ``rate()`` cannot
tell "none yet" from "not scraped". So every scrape first gives each namespace its series at zero
(``declare_namespaces``); in multiprocess mode that zero lands in the scraping process's file and
merges like any other value.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

REQUESTS = Counter("counter_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "counter_http_request_seconds",
    "HTTP request latency by URL route name",
    ["endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter("counter_events_ingested_total", "Mutations applied", ["namespace", "counter_type"])
ROLLUP_BATCHES = Counter("counter_rollup_batches_total", "Rollup batches run", ["namespace"])
ROLLUP_EVENTS = Counter("counter_rollup_events_total", "Events folded into checkpoints", ["namespace"])
ROLLUP_SECONDS = Histogram("counter_rollup_batch_seconds", "Rollup batch latency", ["namespace"])
ROLLUP_BATCH_SIZE = Histogram(
    "counter_rollup_batch_size",
    "Counters per rollup batch (adaptive)",
    ["namespace"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ROLLUP_FAILURES = Counter("counter_rollup_failures_total", "Drain tasks that raised", ["namespace"])
BACKPRESSURE = Counter("counter_backpressure_total", "Requests refused with 429", ["namespace"])
SWEPT = Counter("counter_stale_swept_total", "Counters re-enqueued by the stale sweep")
DRIFT = Counter(
    "counter_checkpoint_drift_total", "Checkpoints that differed from a recount of their events", ["namespace"]
)


# Only namespaces with an event log roll up, get 429s from the rollup backlog, or are audited.
PER_LOGGED_NAMESPACE = (
    ROLLUP_BATCHES,
    ROLLUP_EVENTS,
    ROLLUP_SECONDS,
    ROLLUP_BATCH_SIZE,
    ROLLUP_FAILURES,
    BACKPRESSURE,
    DRIFT,
)


def declare_namespaces(namespaces: list[tuple[str, str]]) -> None:
    """Create the zero-valued series of every ``(name, counter_type)`` that has none yet."""
    for name, counter_type in namespaces:
        EVENTS.labels(name, counter_type)
        if counter_type != "best_effort":
            for metric in PER_LOGGED_NAMESPACE:
                metric.labels(name)


class PipelineCollector:
    """Gauges read at scrape time: rollup queue depth per queue, lag and oldest due trigger."""

    def collect(self):
        from counters.models import Namespace
        from rollups import health

        depth = GaugeMetricFamily(
            "counter_rollup_queue_depth", "Counters queued or in flight", labels=["namespace", "queue"]
        )
        lag = GaugeMetricFamily(
            "counter_rollup_lag_seconds",
            "Age of the oldest write not yet folded into its checkpoint, over queued counters with such writes",
            labels=["namespace", "quantile"],
        )
        never = GaugeMetricFamily(
            "counter_rollup_never_rolled", "Queued counters without a checkpoint yet", labels=["namespace"]
        )
        try:
            for name in Namespace.objects.exclude(counter_type="best_effort").values_list("name", flat=True):
                backlog = health.backlog(name)
                for index, value in backlog.depths.items():
                    depth.add_metric([name, str(index)], value)
                for label, fraction in (("0.5", 0.5), ("0.99", 0.99), ("1", 1.0)):
                    value = health.percentile(backlog.lags, fraction)
                    lag.add_metric([name, label], value or 0.0)
                never.add_metric([name], backlog.never_rolled)
        except Exception:  # noqa: BLE001 - a scrape reports what it can; /readyz names the failing dependency
            logger.warning("pipeline gauges unavailable", exc_info=True)
        yield from (depth, lag, never)


def render() -> tuple[bytes, str]:
    """The exposition text of every process's metrics plus the scrape-time pipeline gauges."""
    from counters.models import Namespace

    try:
        declare_namespaces(list(Namespace.objects.values_list("name", "counter_type")))
    except Exception:  # noqa: BLE001 - a scrape reports what it can; /readyz names the failing dependency
        logger.warning("namespace series unavailable", exc_info=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    live = CollectorRegistry()
    live.register(PipelineCollector())
    return generate_latest(registry) + generate_latest(live), CONTENT_TYPE_LATEST
