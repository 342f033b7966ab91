"""The dataset's API (namespace ``viewer:api``): case search, facets, detail, files, tiles,
label table and window presets."""

from django.urls import path

from viewer.api import catalog
from viewer.tiles import case as case_tiles
from viewer.tiles.urls import tile_urlpatterns

app_name = "api"
urlpatterns = [
    path("cases/", catalog.CaseList.as_view(), name="case-list"),
    path("cases/facets/", catalog.CaseFacets.as_view(), name="case-facets"),
    path("cases/<str:case_id>/", catalog.CaseDetail.as_view(), name="case-detail"),
    path(
        "cases/<str:case_id>/files/<str:which>/",
        case_tiles.case_file,
        name="case-file",
    ),
    path("labels/", catalog.LabelTable.as_view(), name="labels"),
    path("windows/", catalog.WindowPresets.as_view(), name="windows"),
]
urlpatterns += tile_urlpatterns(
    "cases/<str:case_id>/",
    resolve=case_tiles.resolve_case,
    centroids=case_tiles.case_centroids,
    name="case",
    thumbnail=True,
)
