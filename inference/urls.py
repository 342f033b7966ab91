"""Pages and API of the inference app; included at the site root, before the dataset pages."""

from django.urls import path, re_path

from inference import api, views

# Importing the dataset API's URLs registers the "ext" converter (png, webp, jpg, jpeg) that the
# tile URLs below share with the dataset case tiles.
from viewer import url_converters  # noqa: F401  (registers <ext:...>)

urlpatterns = [
    re_path(r"^uploads/new/?$", views.upload_new, name="upload-new"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/files/<str:which>", views.job_file, name="job-file"),
    path("cases/<str:case_id>/segment", views.case_segment, name="case-segment"),
    # API
    path("api/uploads/", api.UploadListCreate.as_view(), name="api-upload-list"),
    path("api/jobs/", api.JobListCreate.as_view(), name="api-job-list"),
    path("api/jobs/<int:job_id>/", api.JobDetail.as_view(), name="api-job-detail"),
    path("api/jobs/<int:job_id>/cancel/", api.JobCancel.as_view(), name="api-job-cancel"),
    path(
        "api/jobs/<int:job_id>/slices/<str:plane>/<int:index>.<ext:ext>",
        api.job_slice,
        name="api-job-slice",
    ),
    path(
        "api/jobs/<int:job_id>/projections/<str:plane>.<ext:ext>",
        api.job_projection,
        name="api-job-projection",
    ),
    path("api/jobs/<int:job_id>/volume/", api.job_volume, name="api-job-volume"),
    path("api/jobs/<int:job_id>/voxel/", api.job_voxel, name="api-job-voxel"),
    path("api/jobs/<int:job_id>/files/<str:which>/", views.job_file, name="api-job-file"),
]
