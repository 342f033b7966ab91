from django.urls import path

from evaluation import api, case_view, views
from viewer.tiles.urls import tile_urlpatterns

app_name = "evaluation"

urlpatterns = [
    path("evaluations/", views.run_list, name="list"),
    path("evaluations/<int:run_id>/", views.run_page, name="run"),
    path("evaluations/<int:run_id>/cases/", views.run_cases, name="cases"),
    path(
        "evaluations/<int:run_id>/cases/<str:case_id>/",
        case_view.evaluated_case_page,
        name="case",
    ),
    path("api/evaluations/", api.RunList.as_view(), name="api-list"),
    path("api/evaluations/<int:run_id>/", api.RunDetail.as_view(), name="api-detail"),
]
urlpatterns += tile_urlpatterns(
    "api/evaluations/<int:run_id>/cases/<str:case_id>/",
    resolve=case_view.resolve_evaluated_case,
    centroids=case_view.evaluated_centroids,
    name="api-case",
)
