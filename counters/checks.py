"""System checks for invariants the service relies on (ids ``counters.E00x``)."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_invariants(app_configs, **kwargs) -> list[Error]:
    errors = []
    if settings.TIME_ZONE != "UTC" or not settings.USE_TZ:
        errors.append(Error("TIME_ZONE must be UTC with USE_TZ = True.", id="counters.E001"))
    if settings.CELERY_TASK_SERIALIZER != "json" or settings.CELERY_ACCEPT_CONTENT != ["json"]:
        errors.append(Error("Celery must serialize tasks as JSON only.", id="counters.E002"))
    if not settings.CELERY_BROKER_URL:
        errors.append(Error("CELERY_BROKER_URL (or REDIS_URL) must be set.", id="counters.E003"))
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        errors.append(Error("The event log needs PostgreSQL.", id="counters.E004"))
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    if visibility <= settings.CELERY_TASK_TIME_LIMIT:
        errors.append(Error("The broker visibility timeout must exceed CELERY_TASK_TIME_LIMIT.", id="counters.E005"))
    return errors
