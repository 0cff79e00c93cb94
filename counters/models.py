import hashlib
import secrets

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Now

from counters.names import COUNTER_MAX_LENGTH, NAMESPACE_PATTERN


class CounterType(models.TextChoices):
    BEST_EFFORT = "best_effort", "best effort (Redis only)"
    EVENTUAL = "eventual", "eventual (event log + rollups)"
    ACCURATE = "accurate", "accurate (rollup + live tail)"


# Ranges of the namespace knobs; the API serializer and the admin form both enforce them.
LIMITS = {
    "ttl_seconds": (1, 10 * 365 * 86400),
    "retention_days": (1, 3650),
    "accept_limit_seconds": (0, 3600),
    "idempotency_window_seconds": (1, 30 * 86400),
    "max_batch_size": (1, 10000),
    "rollup_num_queues": (1, 64),
    "rollup_coalesce_ms": (0, 60000),
    "rollup_batch_size": (1, 1024),
}


def _bounded(field: str) -> list:
    low, high = LIMITS[field]
    return [MinValueValidator(low), MaxValueValidator(high)]


class Namespace(models.Model):
    """A group of counters sharing one counter type and one configuration."""

    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(NAMESPACE_PATTERN)],
        help_text="Lower-case letters, digits, '_' and '-'; immutable.",
    )
    counter_type = models.CharField(max_length=16, choices=CounterType.choices, help_text="Immutable after creation.")
    ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=_bounded("ttl_seconds"),
        help_text="best_effort only: a counter expires this long after its first write (empty: never).",
    )
    retention_days = models.PositiveIntegerField(
        default=7,
        validators=_bounded("retention_days"),
        help_text="eventual/accurate: raw events are kept at least this many days (rollups keep the counts).",
    )
    accept_limit_seconds = models.PositiveIntegerField(
        default=5,
        validators=_bounded("accept_limit_seconds"),
        help_text="Width of the still-mutable window behind now; rollups only fold events older than this.",
    )
    idempotency_window_seconds = models.PositiveIntegerField(
        default=86400,
        validators=_bounded("idempotency_window_seconds"),
        help_text="How long an idempotency token is remembered.",
    )
    max_batch_size = models.PositiveIntegerField(
        default=1000, validators=_bounded("max_batch_size"), help_text="Most mutations in one batch request."
    )
    rollup_num_queues = models.PositiveSmallIntegerField(
        default=8, validators=_bounded("rollup_num_queues"), help_text="Rollup queues counters are hashed over."
    )
    rollup_coalesce_ms = models.PositiveIntegerField(
        default=1000,
        validators=_bounded("rollup_coalesce_ms"),
        help_text="Triggers for one counter within this window coalesce into one rollup.",
    )
    rollup_batch_size = models.PositiveIntegerField(
        default=32,
        validators=_bounded("rollup_batch_size"),
        help_text="Initial counters per rollup batch; the pipeline adapts it to measured latency.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(counter_type__in=CounterType.values), name="namespace_counter_type_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def uses_event_log(self) -> bool:
        return self.counter_type != CounterType.BEST_EFFORT


class Role(models.TextChoices):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


ROLE_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}


def hash_key(raw_key: str) -> str:
    # Keys are 256-bit random secrets, so a fast unsalted hash is enough (no password stretching).
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    """A bearer key; only its SHA-256 is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.READ)
    namespaces = ArrayField(
        models.CharField(max_length=63),
        default=list,
        blank=True,
        help_text="Namespaces this key reaches, comma-separated; empty reaches every namespace.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per second this key may make; empty: the service default; 0: unlimited.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def generate(cls, name: str, role: str = Role.READ, namespaces: list[str] | None = None) -> tuple["ApiKey", str]:
        """Create a key; return it and the secret, which is never stored and cannot be shown again."""
        raw = "ck_" + secrets.token_urlsafe(32)
        key = cls.objects.create(
            name=name, role=role, namespaces=namespaces or [], prefix=raw[:10], key_hash=hash_key(raw)
        )
        return key, raw

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]

    def reaches(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces


class EventKind(models.IntegerChoices):
    ADD = 0, "add"
    CLEAR = 1, "clear"


class Event(models.Model):
    """One immutable entry of the event log.

    The table is created by migration 0002 as a PostgreSQL table partitioned by range of
    ``event_time`` (one partition a day, see counters/partitions.py); its real primary key is
    ``(id, event_time)``, which a partitioned table requires. Django only reads it.
    """

    id = models.BigIntegerField(primary_key=True)
    namespace = models.CharField(max_length=63)
    counter = models.CharField(max_length=COUNTER_MAX_LENGTH, db_collation="C")
    kind = models.SmallIntegerField(choices=EventKind.choices)
    delta = models.BigIntegerField()
    event_time = models.DateTimeField(db_default=Now())

    class Meta:
        managed = False
        db_table = "counters_event"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.counter} {self.get_kind_display()} {self.delta}"


class IdempotencyToken(models.Model):
    """A remembered token; written in the transaction of the event it guards, so it dedupes across
    partitions and days. Pruned after the namespace's idempotency window."""

    namespace = models.CharField(max_length=63)
    counter = models.CharField(max_length=COUNTER_MAX_LENGTH, db_collation="C")
    token = models.CharField(max_length=255, db_collation="C")
    operation = models.CharField(max_length=16)
    delta = models.BigIntegerField()
    response_status = models.SmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["namespace", "counter", "token"], name="idempotency_token_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_token_created")]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.counter} token {self.token}"
