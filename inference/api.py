"""The inference API: uploads, jobs, and the viewer's tile endpoints for a job's volumes.

Everything is private to its owner: another user's upload or job is answered 404, exactly as one
that does not exist. Errors are JSON ``{"error": message}``, plus ``field`` for upload refusals and
bad parameters (whose 400 viewer.api.errors shapes).
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from inference import jobs, services, upload_handlers
from inference.jobs import JobInputError, JobStateError
from inference.model_settings import model_error_message, model_status
from inference.models import SegmentationJob, Upload
from inference.nnunet.config import ModelConfigError
from inference.serializers import (
    JobCreateSerializer,
    JobSerializer,
    JobSummarySerializer,
    UploadCreatedSerializer,
    UploadCreateSerializer,
    UploadSerializer,
)
from inference.uploads import UploadError
from inference.views import own_job
from viewer.api.pagination import CasePagination
from viewer.models import Case
from viewer.tiles.urls import Unavailable
from viewer.tiles.volumes import VolumeSet


def _error(message: str, code: int, **extra) -> Response:
    return Response({"error": message, **extra}, status=code)


class UploadListCreate(APIView):
    """``GET``: your uploads. ``POST`` (multipart): upload a CT, which is checked, stored and
    queued for segmentation at once; answers the upload and its job."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser]

    upload_handler = None

    def initialize_request(self, request, *args, **kwargs):
        # Before DRF (or its CSRF check) first reads the body: stream files to disk, not memory.
        if request.method == "POST":
            self.upload_handler = upload_handlers.install(
                request,
                directory=services.incoming_dir(),
                limit_bytes=services.upload_limit_bytes(),
            )
        return super().initialize_request(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:  # whatever answered (a refusal, a failed CSRF check), no received file stays
            if self.upload_handler is not None:
                self.upload_handler.discard()

    @extend_schema(responses=UploadSerializer(many=True))
    def get(self, request):
        paginator = CasePagination()
        page = paginator.paginate_queryset(
            Upload.objects.visible_to(request.user), request, view=self
        )
        return paginator.get_paginated_response(UploadSerializer(page, many=True).data)

    @extend_schema(request=UploadCreateSerializer, responses={201: UploadCreatedSerializer})
    def post(self, request):
        handler = self.upload_handler
        model = model_status()
        if not model.available:
            return _error(model.message, status.HTTP_503_SERVICE_UNAVAILABLE)
        if upload_handlers.sent_in_chunks(request):
            return _error(upload_handlers.CHUNKED_MESSAGE, status.HTTP_411_LENGTH_REQUIRED)
        limit = services.upload_limit_bytes()
        if upload_handlers.declared_too_large(request, limit_bytes=limit):
            return _error(services.too_large_message(), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        form = UploadCreateSerializer(data=request.data)
        if handler.too_large:
            return _error(services.too_large_message(), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        form.is_valid(raise_exception=True)  # 400 shaped by viewer.api.errors
        label = form.validated_data.get("label")
        try:
            upload, job = services.create_upload_job(
                user=request.user,
                image=form.validated_data["image"].incoming(),
                label=label.incoming() if label is not None else None,
                mode=form.validated_data.get("mode"),
            )
        except UploadError as exc:
            return _error(exc.message, exc.status, field=exc.field)
        except ModelConfigError as exc:
            return _error(model_error_message(exc), status.HTTP_503_SERVICE_UNAVAILABLE)
        body = {"upload": UploadSerializer(upload).data, "job": JobSerializer(job).data}
        return Response(body, status=status.HTTP_201_CREATED)


class UploadDetail(APIView):
    """``GET``: one of your uploads. ``DELETE``: remove it, its jobs and all their files (409
    while one of its jobs runs: cancel it first)."""

    permission_classes = [IsAuthenticated]

    def _own(self, request, upload_id: int) -> Upload:
        upload = Upload.objects.visible_to(request.user).filter(pk=upload_id).first()
        if upload is None:
            raise Http404("no such upload")
        return upload

    @extend_schema(responses=UploadSerializer)
    def get(self, request, upload_id: int):
        return Response(UploadSerializer(self._own(request, upload_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, upload_id: int):
        try:
            services.delete_upload(self._own(request, upload_id))
        except JobStateError as exc:
            return _error(exc.message, exc.status)
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobListCreate(APIView):
    """``GET``: your jobs, newest first. ``POST`` ``{"case_id": ...}`` or ``{"upload_id": ...}``
    (and ``"mode"``: fast or accurate): queue a segmentation."""

    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser]

    @extend_schema(responses=JobSummarySerializer(many=True))
    def get(self, request):
        own = SegmentationJob.objects.visible_to(request.user).select_related("upload", "case")
        paginator = CasePagination()
        page = paginator.paginate_queryset(own, request, view=self)
        return paginator.get_paginated_response(JobSummarySerializer(page, many=True).data)

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer})
    def post(self, request):
        form = JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)  # 400 shaped by viewer.api.errors
        data = form.validated_data
        try:
            if "case_id" in data:
                case = Case.objects.filter(case_id=data["case_id"]).first()
                if case is None:
                    return _error(f"no case {data['case_id']!r} in the catalog", 404)
                job = services.create_job(user=request.user, case=case, mode=data.get("mode"))
            else:
                upload = Upload.objects.visible_to(request.user).filter(pk=data["upload_id"])
                if not upload.exists():
                    return _error("no such upload", 404)
                job = services.create_job(
                    user=request.user, upload=upload.get(), mode=data.get("mode")
                )
        except JobInputError as exc:
            return _error(exc.message, exc.status)
        except ModelConfigError as exc:
            return _error(model_error_message(exc), status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    """``GET``: one of your jobs: state, progress, model, timings (s) and, when done, results and
    metrics. ``DELETE``: remove it and its result files (409 while it runs: cancel it first)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=JobSerializer)
    def get(self, request, job_id: int):
        return Response(JobSerializer(own_job(request, job_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, job_id: int):
        try:
            services.delete_job(own_job(request, job_id))
        except JobStateError as exc:
            return _error(exc.message, exc.status)
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobCancel(APIView):
    """Cancel a queued job at once, or ask a running one to stop; 409 once it has finished."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=JobSerializer)
    def post(self, request, job_id: int):
        job = own_job(request, job_id)
        try:
            job = services.cancel_job(job)
        except JobStateError as exc:
            return _error(exc.message, exc.status)
        return Response(JobSerializer(job).data)


# --- tiles: the dataset case endpoints, for a job's image, prediction and ground truth ----------


def resolve_job(request, *, job_id: int) -> tuple[SegmentationJob, VolumeSet]:
    """The tile endpoints' resolver for jobs: yours only (404 for anyone else's)."""
    if not request.user.is_authenticated:
        raise Unavailable(403, "Sign in to see your segmentation jobs.")
    try:
        job = own_job(request, job_id)
    except Http404:
        raise Unavailable(404, f"no job {job_id}") from None
    try:
        return job, jobs.job_volumes(job)
    except JobInputError as exc:
        raise Unavailable(exc.status, exc.message) from None


def job_centroids_mm(job: SegmentationJob, volumes) -> dict[int, tuple]:
    """Centroids (RAS mm) for the viewer's vertebra list: predicted vertebrae, then those only in
    the ground truth (missed), so every row of the metrics table can be jumped to."""
    if volumes.labels is None:
        return {}
    found = {}
    for kind in ("reference", "prediction"):  # prediction last: it wins where both exist
        for label, centroid in (job.centroids or {}).get(kind, {}).items():
            found[int(label)] = tuple(centroid["mm"])
    return found
