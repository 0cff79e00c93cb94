"""Validation and representation of API bodies. Strict: JSON integers only (no bools, floats or
strings), times with an explicit offset, unknown fields refused."""

from __future__ import annotations

import datetime as dt

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from counters.models import LIMITS, CounterType
from counters.names import NAMESPACE_PATTERN, counter_name_problem, is_valid_namespace

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@extend_schema_field(OpenApiTypes.INT64)
class StrictIntegerField(serializers.Field):
    default_error_messages = {
        "invalid": "Must be a JSON integer.",
        "range": "Must be between {low} and {high}.",
    }

    def __init__(self, *, low: int, high: int, **kwargs):
        self.low, self.high = low, high
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        # bool is a subclass of int in Python; JSON true is not a number.
        if type(data) is not int:
            self.fail("invalid")
        if not self.low <= data <= self.high:
            self.fail("range", low=self.low, high=self.high)
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(OpenApiTypes.STR)
class StrictCharField(serializers.CharField):
    """A string that must be a JSON string (DRF's CharField would turn 5 into "5")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def parse_time(value: object) -> dt.datetime | None:
    """An RFC 3339 time with an explicit offset, or None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@extend_schema_field(OpenApiTypes.DATETIME)
class Rfc3339Field(serializers.Field):
    default_error_messages = {"invalid": "Must be an RFC 3339 time with an explicit offset."}

    def to_internal_value(self, data):
        value = parse_time(data)
        if value is None:
            self.fail("invalid")
        return value

    def to_representation(self, value):
        return format_time(value)


def format_time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class StrictSerializer(serializers.Serializer):
    """Refuses bodies that are not objects and fields it does not know; a read-only field (such
    as ``created_at``) is unknown on input, since a client cannot set it."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Must be a JSON object."]})
        writable = {name for name, field in self.fields.items() if not field.read_only}
        unknown = sorted(set(data) - writable)
        if unknown:
            raise serializers.ValidationError({field: ["Unknown field."] for field in unknown})
        return super().to_internal_value(data)


class TokenSerializer(StrictSerializer):
    token = StrictCharField(min_length=1, max_length=255, trim_whitespace=False)
    generation_time = Rfc3339Field()


def example(name: str, value: dict, **kwargs) -> OpenApiExample:
    return OpenApiExample(name, value=value, **kwargs)


TOKEN_EXAMPLE = {"token": "3f1c9a7e-retry-1", "generation_time": "2026-12-03T15:04:05.123456Z"}


@extend_schema_serializer(
    examples=[
        example("add 3", {"delta": 3, "idempotency_token": TOKEN_EXAMPLE}),
        example("subtract without a token (not retry-safe)", {"delta": -1}),
    ]
)
class AddSerializer(StrictSerializer):
    """Schema only: counters/api/batch.py validates add bodies (``parse_add``)."""

    delta = StrictIntegerField(low=INT64_MIN, high=INT64_MAX)
    idempotency_token = TokenSerializer(required=False)


@extend_schema_serializer(examples=[example("clear with a token", {"idempotency_token": TOKEN_EXAMPLE})])
class ClearSerializer(StrictSerializer):
    """Schema only: counters/api/batch.py validates clear bodies (``parse_clear``)."""

    idempotency_token = TokenSerializer(required=False)


class CounterNameField(StrictCharField):
    def __init__(self, **kwargs):
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        problem = counter_name_problem(data)
        if problem:
            raise serializers.ValidationError(f"Invalid counter name: {problem}.")
        return data


class BatchItemSerializer(StrictSerializer):
    """One batch item, for the OpenAPI schema only: counters/api/batch.py validates items (``delta``
    required for ``add``, absent or 0 for ``clear``) without DRF's per-item cost."""

    counter = CounterNameField()
    op = serializers.ChoiceField(choices=["add", "clear"], default="add")
    delta = StrictIntegerField(low=INT64_MIN, high=INT64_MAX, required=False)
    idempotency_token = TokenSerializer(required=False)


@extend_schema_field(BatchItemSerializer(many=True))
class MutationListField(serializers.ListField):
    """Items stay raw JSON here; the view validates each so an error can name its index."""


@extend_schema_serializer(
    examples=[
        example(
            "two adds and a clear",
            {
                "mutations": [
                    {"counter": "orders", "delta": 2, "idempotency_token": TOKEN_EXAMPLE},
                    {"counter": "refunds", "op": "clear"},
                    {"counter": "refunds", "delta": 1},
                ]
            },
        )
    ]
)
class BatchSerializer(StrictSerializer):
    """The batch body, for the OpenAPI schema; counters/api/batch.py validates it."""

    mutations = MutationListField(child=serializers.JSONField(), allow_empty=True)


class BatchResultSerializer(serializers.Serializer):
    counter = serializers.CharField()
    applied = serializers.BooleanField()


class BatchResponseSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True)


@extend_schema_serializer(
    examples=[example("applied", {"namespace": "shop", "counter": "orders", "delta": 3, "applied": True})]
)
class AddResponseSerializer(serializers.Serializer):
    namespace = serializers.CharField()
    counter = serializers.CharField()
    delta = serializers.IntegerField()
    applied = serializers.BooleanField()


@extend_schema_serializer(
    examples=[example("applied", {"namespace": "shop", "counter": "orders", "delta": 3, "applied": True, "count": 42})]
)
class AddAndGetResponseSerializer(AddResponseSerializer):
    count = serializers.IntegerField()


class ClearResponseSerializer(serializers.Serializer):
    namespace = serializers.CharField()
    counter = serializers.CharField()
    count = serializers.IntegerField()
    applied = serializers.BooleanField()


@extend_schema_serializer(
    examples=[
        example(
            "eventual",
            {
                "namespace": "shop",
                "counter": "orders",
                "count": 42,
                "consistency": "eventual",
                "as_of": "2026-12-03T15:04:00.000000Z",
            },
        )
    ]
)
class CountSerializer(serializers.Serializer):
    namespace = serializers.CharField()
    counter = serializers.CharField()
    count = serializers.IntegerField()
    consistency = serializers.ChoiceField(choices=CounterType.values)
    as_of = serializers.DateTimeField(allow_null=True)


class CounterListItemSerializer(serializers.Serializer):
    counter = serializers.CharField()
    count = serializers.IntegerField()
    as_of = serializers.DateTimeField(allow_null=True)


class CounterListSerializer(serializers.Serializer):
    results = CounterListItemSerializer(many=True)
    next = serializers.URLField(allow_null=True)


def _limit(field: str, **kwargs) -> StrictIntegerField:
    low, high = LIMITS[field]
    return StrictIntegerField(low=low, high=high, **kwargs)


@extend_schema_field(
    {"type": "string", "pattern": NAMESPACE_PATTERN, "maxLength": 63, "description": "Immutable after creation."}
)
class NamespaceNameField(StrictCharField):
    pass


class RollupConfigSerializer(StrictSerializer):
    num_queues = _limit("rollup_num_queues", required=False)
    coalesce_ms = _limit("rollup_coalesce_ms", required=False)
    batch_size = _limit("rollup_batch_size", required=False)


@extend_schema_serializer(
    examples=[
        example(
            "create an eventual namespace",
            {"name": "shop", "counter_type": "eventual", "retention_days": 14},
            request_only=True,
        ),
        example("change a knob", {"max_batch_size": 500}, request_only=True),
    ]
)
class NamespaceSerializer(StrictSerializer):
    """A namespace's configuration; ``name`` and ``counter_type`` are immutable (PATCH refuses them)."""

    name = NamespaceNameField(max_length=63)
    counter_type = serializers.ChoiceField(choices=CounterType.values, help_text="Immutable after creation.")
    ttl_seconds = _limit("ttl_seconds", required=False, allow_null=True)
    retention_days = _limit("retention_days", required=False)
    accept_limit_seconds = _limit("accept_limit_seconds", required=False)
    idempotency_window_seconds = _limit("idempotency_window_seconds", required=False)
    max_batch_size = _limit("max_batch_size", required=False)
    rollup = RollupConfigSerializer(required=False)
    created_at = serializers.DateTimeField(read_only=True)

    def validate_name(self, value: str) -> str:
        if not is_valid_namespace(value):
            raise serializers.ValidationError(f"Must match {NAMESPACE_PATTERN}.")
        return value

    def validate(self, attrs):
        if self.instance is not None:
            for field in ("name", "counter_type"):
                if field in attrs and attrs[field] != getattr(self.instance, field):
                    raise serializers.ValidationError({field: ["Immutable after creation."]})
        counter_type = attrs.get("counter_type") or getattr(self.instance, "counter_type", None)
        if attrs.get("ttl_seconds") is not None and counter_type != CounterType.BEST_EFFORT:
            raise serializers.ValidationError({"ttl_seconds": ["Only best_effort namespaces expire counters."]})
        return attrs

    def model_fields(self) -> dict:
        """The validated data as Namespace model fields."""
        data = dict(self.validated_data)
        for key, value in data.pop("rollup", {}).items():
            data[f"rollup_{key}"] = value
        return data

    def to_representation(self, instance):
        return {
            "name": instance.name,
            "counter_type": instance.counter_type,
            "ttl_seconds": instance.ttl_seconds,
            "retention_days": instance.retention_days,
            "accept_limit_seconds": instance.accept_limit_seconds,
            "idempotency_window_seconds": instance.idempotency_window_seconds,
            "max_batch_size": instance.max_batch_size,
            "rollup": {
                "num_queues": instance.rollup_num_queues,
                "coalesce_ms": instance.rollup_coalesce_ms,
                "batch_size": instance.rollup_batch_size,
            },
            "created_at": format_time(instance.created_at),
        }


class NamespaceListSerializer(serializers.Serializer):
    results = NamespaceSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable code, e.g. invalid_delta, namespace_not_found.")
    message = serializers.CharField(help_text="For humans; may change between releases.")
    details = serializers.DictField(help_text="Context of the error, e.g. the invalid fields or a batch index.")


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx/5xx on /api/ paths, whatever raised it."""

    error = ErrorBodySerializer()
