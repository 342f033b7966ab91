from django.urls import path

from viewer.api import catalog
from viewer.tiles import case as case_tiles
from viewer.tiles.urls import tile_urlpatterns

urlpatterns = [
    path("cases/", catalog.CaseList.as_view(), name="api-case-list"),
    path("cases/facets/", catalog.CaseFacets.as_view(), name="api-case-facets"),
    path("cases/<str:case_id>/", catalog.CaseDetail.as_view(), name="api-case-detail"),
    path(
        "cases/<str:case_id>/files/<str:which>/",
        case_tiles.case_file,
        name="api-case-file",
    ),
    path("labels/", catalog.LabelTable.as_view(), name="api-labels"),
    path("windows/", catalog.WindowPresets.as_view(), name="api-windows"),
]
urlpatterns += tile_urlpatterns(
    "cases/<str:case_id>/",
    resolve=case_tiles.resolve_case,
    centroids=case_tiles.case_centroids,
    name="api-case",
    thumbnail=True,
)
