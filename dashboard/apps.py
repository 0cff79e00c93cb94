from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The counter-health dashboard at /dashboard/ (staff only)."""

    name = "dashboard"
