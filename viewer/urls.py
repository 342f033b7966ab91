from django.urls import path

from viewer import pages

urlpatterns = [
    path("", pages.browse, name="browse"),
    path("cases/<str:case_id>/", pages.case_page, name="case"),
]
