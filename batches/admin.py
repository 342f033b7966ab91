from django.contrib import admin

from batches.models import Batch


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "split", "mode", "status", "created_by", "created_at"]
    list_filter = ["status", "split", "mode"]
    readonly_fields = [f.name for f in Batch._meta.fields]
