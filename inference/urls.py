"""Pages and API of the inference app; included at the site root, before the dataset pages."""

from django.urls import path, re_path

from inference import api, model_page, views
from viewer.tiles.urls import tile_urlpatterns

app_name = "inference"
urlpatterns = [
    re_path(r"^uploads/new/?$", views.upload_new, name="upload-new"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/files/<str:which>", views.job_file, name="job-file"),
    path("cases/<str:case_id>/segment", views.case_segment, name="case-segment"),
    path("models/", model_page.model_page, name="model-page"),
    # API
    path("api/uploads/", api.UploadListCreate.as_view(), name="api-upload-list"),
    path("api/uploads/<int:upload_id>/", api.UploadDetail.as_view(), name="api-upload-detail"),
    path("api/jobs/", api.JobListCreate.as_view(), name="api-job-list"),
    path("api/jobs/<int:job_id>/", api.JobDetail.as_view(), name="api-job-detail"),
    path("api/jobs/<int:job_id>/cancel/", api.JobCancel.as_view(), name="api-job-cancel"),
    path("api/jobs/<int:job_id>/files/<str:which>/", views.job_file, name="api-job-file"),
]
urlpatterns += tile_urlpatterns(
    "api/jobs/<int:job_id>/",
    resolve=api.resolve_job,
    centroids=api.job_centroids_mm,
    name="api-job",
)
