from django.contrib import admin

from evaluation.models import CaseResult, EvaluationRun


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ["name", "created", "split", "status", "cases_evaluated", "cases_expected"]
    list_filter = ["status", "split"]
    search_fields = ["name", "prediction_dir"]
    readonly_fields = ["summary", "unmatched_files"]


@admin.register(CaseResult)
class CaseResultAdmin(admin.ModelAdmin):
    list_display = ["case_id", "run", "split", "status", "mean_dice", "mean_hd95_mm"]
    list_filter = ["status", "split", "source", "anomaly"]
    search_fields = ["case_id"]
    raw_id_fields = ["run", "catalog_case"]
