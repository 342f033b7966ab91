from django.urls import path

from evaluation import api, case_view, views
from viewer import url_converters  # noqa: F401  (registers <ext:...>)

urlpatterns = [
    path("evaluations/", views.run_list, name="evaluation-list"),
    path("evaluations/<int:run_id>/", views.run_page, name="evaluation"),
    path("evaluations/<int:run_id>/cases/", views.run_cases, name="evaluation-cases"),
    path(
        "evaluations/<int:run_id>/cases/<str:case_id>/",
        case_view.evaluated_case_page,
        name="evaluation-case",
    ),
    path("api/evaluations/", api.RunList.as_view(), name="api-evaluation-list"),
    path("api/evaluations/<int:run_id>/", api.RunDetail.as_view(), name="api-evaluation-detail"),
    path(
        "api/evaluations/<int:run_id>/cases/<str:case_id>/slices/<str:plane>/<int:index>.<ext:ext>",
        case_view.evaluated_slice,
    ),
    path(
        "api/evaluations/<int:run_id>/cases/<str:case_id>/projections/<str:plane>.<ext:ext>",
        case_view.evaluated_projection,
    ),
    path("api/evaluations/<int:run_id>/cases/<str:case_id>/volume/", case_view.evaluated_volume),
    path("api/evaluations/<int:run_id>/cases/<str:case_id>/voxel/", case_view.evaluated_voxel),
]
