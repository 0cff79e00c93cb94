from django.urls import path, register_converter
from django.urls.converters import PathConverter

from counters.api import views


class CounterNameConverter(PathConverter):
    """Any text, "/" and newlines included: <path>'s ".+" stops at a newline, which made a%0Ab a 404."""

    regex = r"[\s\S]+"


register_converter(CounterNameConverter, "counter")

# Counter names are one percent-encoded path segment; Django decodes %2F to "/", so the converter
# captures it and the view answers 400 invalid_name instead of a confusing 404.
urlpatterns = [
    path("namespaces", views.NamespaceListView.as_view(), name="namespace-list"),
    path("namespaces/<str:ns>", views.NamespaceDetailView.as_view(), name="namespace-detail"),
    path("namespaces/<str:ns>/batch", views.BatchView.as_view(), name="batch"),
    path("namespaces/<str:ns>/counters", views.CounterListView.as_view(), name="counter-list"),
    path("namespaces/<str:ns>/counters/<counter:name>/add-and-get", views.AddAndGetView.as_view(), name="add-and-get"),
    path("namespaces/<str:ns>/counters/<counter:name>/add", views.AddView.as_view(), name="add"),
    path("namespaces/<str:ns>/counters/<counter:name>/clear", views.ClearView.as_view(), name="clear"),
    path("namespaces/<str:ns>/counters/<counter:name>", views.CounterView.as_view(), name="counter"),
]
