from django.urls import path

from evaluation import api, case_view, views
from viewer.tiles.urls import tile_urlpatterns

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
]
urlpatterns += tile_urlpatterns(
    "api/evaluations/<int:run_id>/cases/<str:case_id>/",
    resolve=case_view.resolve_evaluated_case,
    centroids=case_view.evaluated_centroids,
    name="api-evaluation-case",
)
