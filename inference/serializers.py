"""JSON shapes of uploads and segmentation jobs in the API."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inference.demo_model import model_notice
from inference.models import SegmentationJob, Upload


class UploadSerializer(serializers.ModelSerializer):
    has_label = serializers.BooleanField(read_only=True)

    class Meta:
        model = Upload
        fields = [
            "id",
            "created_at",
            "kind",
            "image_name",
            "label_name",
            "has_label",
            "size_bytes",
            "shape",
            "spacing_mm",
            "axis_codes",
            "dicom_files",
            "series_description",
            "label_values",
            "warnings",
        ]


class JobSummarySerializer(serializers.ModelSerializer):
    """A job in lists: state and timing, no results."""

    case_id = serializers.SerializerMethodField()
    has_reference = serializers.BooleanField(read_only=True)
    urls = serializers.SerializerMethodField()

    class Meta:
        model = SegmentationJob
        fields = [
            "id",
            "title",
            "status",
            "progress",
            "stage",
            "mode",
            "cancel_requested",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "device",
            "error",
            "upload",
            "case_id",
            "has_reference",
            "urls",
        ]

    def get_case_id(self, job) -> str | None:
        return job.case.case_id if job.case is not None else None

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_urls(self, job) -> dict:
        urls = {
            "self": reverse("inference:api-job-detail", args=[job.pk]),
            "page": job.get_absolute_url(),
            "cancel": reverse("inference:api-job-cancel", args=[job.pk]),
            "volume": reverse("inference:api-job-volume", args=[job.pk]),
        }
        for which in job.file_names():
            urls[which] = reverse("inference:api-job-file", args=[job.pk, which])
        return urls


class JobSerializer(JobSummarySerializer):
    """One job with everything known: model identity, timings (s), results and metrics.
    ``model_notice``: a warning to show with the result ("" for an ordinary model)."""

    model_notice = serializers.SerializerMethodField()

    def get_model_notice(self, job) -> str:
        return model_notice(job.model)

    class Meta(JobSummarySerializer.Meta):
        fields = [
            *JobSummarySerializer.Meta.fields,
            "worker",
            "model",
            "model_notice",
            "timings",
            "notes",
            "labels_present",
            "centroids",
            "metrics",
        ]


class JobCreateSerializer(serializers.Serializer):
    """Segment a dataset case (``case_id``) or one of your uploads again (``upload_id``)."""

    case_id = serializers.CharField(required=False)
    upload_id = serializers.IntegerField(required=False)
    mode = serializers.ChoiceField(choices=SegmentationJob.Mode.choices, required=False)

    def validate(self, attrs):
        if ("case_id" in attrs) == ("upload_id" in attrs):
            raise serializers.ValidationError("give exactly one of case_id and upload_id")
        return attrs


class UploadCreateSerializer(serializers.Serializer):
    """multipart/form-data: ``image`` (NIfTI or DICOM zip), optional ``label``, ``mode``."""

    image = serializers.FileField()
    label = serializers.FileField(required=False)
    mode = serializers.ChoiceField(choices=SegmentationJob.Mode.choices, required=False)


class UploadCreatedSerializer(serializers.Serializer):
    """The answer to an upload: the stored upload and the job queued for it."""

    upload = UploadSerializer()
    job = JobSerializer()
