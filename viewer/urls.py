"""The dataset's pages (browse, case) and, under ``api/``, its search and tile API."""

from django.urls import include, path

from viewer import pages

app_name = "viewer"
urlpatterns = [
    path("", pages.browse, name="browse"),
    path("cases/<str:case_id>/", pages.case_page, name="case"),
    path("api/", include("viewer.api.urls")),
]
