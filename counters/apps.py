from django.apps import AppConfig
from django.conf import settings


class CountersConfig(AppConfig):
    name = "counters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_started
        from django.db import reset_queries

        from counters import checks  # noqa: F401

        # Django clears every connection's query log at the start of each request; the log only
        # fills under DEBUG (or a test's CaptureQueriesContext, which clears it itself), and the
        # clearing walked the connections through asgiref locals: 6% of an add's CPU in py-spy.
        if not settings.DEBUG:
            request_started.disconnect(reset_queries)
