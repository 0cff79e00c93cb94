from django.urls import path

from counters.api import views

# Counter names are one percent-encoded path segment; Django decodes %2F to "/", so the <path>
# converter captures it and the view answers 400 invalid_name instead of a confusing 404.
urlpatterns = [
    path("namespaces", views.NamespaceListView.as_view(), name="namespace-list"),
    path("namespaces/<str:ns>", views.NamespaceDetailView.as_view(), name="namespace-detail"),
    path("namespaces/<str:ns>/batch", views.BatchView.as_view(), name="batch"),
    path("namespaces/<str:ns>/counters", views.CounterListView.as_view(), name="counter-list"),
    path("namespaces/<str:ns>/counters/<path:name>/add-and-get", views.AddAndGetView.as_view(), name="add-and-get"),
    path("namespaces/<str:ns>/counters/<path:name>/add", views.AddView.as_view(), name="add"),
    path("namespaces/<str:ns>/counters/<path:name>/clear", views.ClearView.as_view(), name="clear"),
    path("namespaces/<str:ns>/counters/<path:name>", views.CounterView.as_view(), name="counter"),
]
