from django.urls import path

from evaluation import api, views

urlpatterns = [
    path("evaluations/", views.run_list, name="evaluation-list"),
    path("evaluations/<int:run_id>/", views.run_page, name="evaluation"),
    path("evaluations/<int:run_id>/cases/", views.run_cases, name="evaluation-cases"),
    path("api/evaluations/", api.RunList.as_view(), name="api-evaluation-list"),
    path("api/evaluations/<int:run_id>/", api.RunDetail.as_view(), name="api-evaluation-detail"),
]
