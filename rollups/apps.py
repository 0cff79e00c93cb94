from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RollupsConfig(AppConfig):
    name = "rollups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rollups.schedules import install_default_schedules

        post_migrate.connect(install_default_schedules, sender=self)
