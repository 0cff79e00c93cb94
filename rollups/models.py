from django.db import models

from counters.names import COUNTER_MAX_LENGTH


class Checkpoint(models.Model):
    """The rolled-up state of one eventual/accurate counter.

    ``last_rollup_count`` is the exact count of every event with ``event_time <= last_rollup_ts``;
    checkpoints only move forward (compare-and-set on ``last_rollup_ts``, rollups/pipeline.py).
    ``last_write_ts`` is the newest event the last rollup saw, folded or not: a checkpoint with
    ``last_write_ts > last_rollup_ts`` still has a tail to fold.
    """

    namespace = models.CharField(max_length=63)
    counter = models.CharField(max_length=COUNTER_MAX_LENGTH, db_collation="C")
    # Sums of int64 deltas leave int64; 40 digits hold 2^63 events of 2^63 each, with room.
    last_rollup_count = models.DecimalField(max_digits=40, decimal_places=0)
    last_rollup_ts = models.DateTimeField()
    last_write_ts = models.DateTimeField(null=True)
    # The counter's first event, set once by its first rollup. While it is still inside retention
    # every event of the counter can be recounted (rollups/audit.py); null on rows made before it.
    first_event_ts = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["namespace", "counter"], name="checkpoint_counter_unique"),
        ]
        indexes = [models.Index(fields=["last_rollup_ts"], name="checkpoint_rollup_ts")]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.counter} = {self.last_rollup_count} @ {self.last_rollup_ts}"


class SweepState(models.Model):
    """Durable progress of the stale sweep, per namespace: every event of ``namespace`` at or
    before ``swept_until`` is known to be folded into its checkpoint, so a sweep only scans newer
    events. Per namespace because each namespace's window closes ``accept_limit_seconds`` behind
    now: one namespace with a long accept limit must not hold back the repair of the others."""

    namespace = models.CharField(max_length=63, unique=True)
    swept_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.namespace} swept until {self.swept_until}"
