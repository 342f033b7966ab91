from django.urls import path

from viewer.api import catalog

urlpatterns = [
    path("cases/", catalog.CaseList.as_view(), name="api-case-list"),
    path("cases/facets/", catalog.CaseFacets.as_view(), name="api-case-facets"),
    path("cases/<str:case_id>/", catalog.CaseDetail.as_view(), name="api-case-detail"),
    path("labels/", catalog.LabelTable.as_view(), name="api-labels"),
    path("windows/", catalog.WindowPresets.as_view(), name="api-windows"),
]
