from django.urls import path

from viewer import url_converters  # noqa: F401  (registers <ext:...>)
from viewer.api import case_tiles, catalog

urlpatterns = [
    path("cases/", catalog.CaseList.as_view(), name="api-case-list"),
    path("cases/facets/", catalog.CaseFacets.as_view(), name="api-case-facets"),
    path("cases/<str:case_id>/", catalog.CaseDetail.as_view(), name="api-case-detail"),
    path(
        "cases/<str:case_id>/slices/<str:plane>/<int:index>.<ext:ext>",
        case_tiles.case_slice,
        name="api-case-slice",
    ),
    path(
        "cases/<str:case_id>/projections/<str:plane>.<ext:ext>",
        case_tiles.case_projection,
        name="api-case-projection",
    ),
    path(
        "cases/<str:case_id>/thumbnail.<ext:ext>",
        case_tiles.case_thumbnail,
        name="api-case-thumbnail",
    ),
    path("cases/<str:case_id>/volume/", case_tiles.case_volume, name="api-case-volume"),
    path("cases/<str:case_id>/voxel/", case_tiles.case_voxel, name="api-case-voxel"),
    path(
        "cases/<str:case_id>/files/<str:which>/",
        case_tiles.case_file,
        name="api-case-file",
    ),
    path("labels/", catalog.LabelTable.as_view(), name="api-labels"),
    path("windows/", catalog.WindowPresets.as_view(), name="api-windows"),
]
