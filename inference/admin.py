from django.contrib import admin

from inference.models import SegmentationJob, Upload


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "image_name", "kind", "label_name", "created_at"]
    list_filter = ["kind"]
    search_fields = ["image_name", "owner__username"]
    readonly_fields = [f.name for f in Upload._meta.fields]


@admin.register(SegmentationJob)
class SegmentationJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "title",
        "status",
        "progress",
        "device",
        "attempts",
        "created_at",
    ]
    list_filter = ["status", "mode", "device"]
    search_fields = ["title", "owner__username", "worker"]
    readonly_fields = [f.name for f in SegmentationJob._meta.fields]
