"""Evaluation runs of a folder of predictions against the ground truth of the catalog.

``EvaluationRun``: one ``manage.py evaluate`` of a prediction folder. ``CaseResult``: one row
per case of the evaluated split (evaluated, or why not). ``LabelResult``: one row per vertebra
label counted in a case (see ``ctspine.metrics`` for when a label is counted). Dice and NSD
are fractions in [0, 1]; distances are in mm, null where not defined.
"""

from __future__ import annotations

from dataclasses import fields

from django.db import models
from django.urls import reverse

from ctspine.labels import label_name
from ctspine.metrics import LabelMetrics
from evaluation import table2
from evaluation.case_metrics import OK, CaseStatus
from evaluation.table2 import CaseRecord
from viewer.models import Case

EVALUATED_SPLITS = {
    "test_public": ("test_public",),
    "test_private": ("test_private",),
    "all": ("test_public", "test_private"),
    "train": ("train",),
}


class EvaluationRunQuerySet(models.QuerySet):
    def finished(self):
        return self.filter(status=EvaluationRun.Status.DONE)

    def newest_first(self):
        return self.order_by("-created", "-id")


class EvaluationRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    prediction_dir = models.CharField(max_length=1024)  # absolute
    # A key of EVALUATED_SPLITS, or the key of a reference set (e.g. "test_verse").
    split = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    # A reference folder not in the catalog (Test_VerSe); blank: the catalog's ground truth.
    reference_dir = models.CharField(max_length=1024, blank=True)
    tolerance_mm = models.FloatField(default=2.0)  # NSD tolerance
    # True: a case without a prediction is scored as an empty prediction (Dice 0 for each of
    # its vertebrae); False (--skip-missing): it is left out of the tables.
    missing_as_failure = models.BooleanField(default=True)
    workers = models.PositiveSmallIntegerField(default=1)
    seconds = models.FloatField(null=True, blank=True)  # wall time of the evaluation
    # Counts: cases of the split with ground truth, and how they ended.
    cases_expected = models.PositiveIntegerField(default=0)
    cases_evaluated = models.PositiveIntegerField(default=0)
    cases_missing = models.PositiveIntegerField(default=0)
    cases_failed = models.PositiveIntegerField(default=0)  # grid mismatch or unreadable
    # Files of the folder that predict no evaluated case: [{"name", "reason"}].
    unmatched_files = models.JSONField(default=list, blank=True)
    # The tables of table2.report() over every evaluated case, as written to the JSON file.
    summary = models.JSONField(default=dict, blank=True)
    # Files written beside the printout: Table 2 (CSV), one row per case and label (CSV), all (JSON).
    table_csv_path = models.CharField(max_length=1024, blank=True)
    labels_csv_path = models.CharField(max_length=1024, blank=True)
    json_path = models.CharField(max_length=1024, blank=True)

    objects = EvaluationRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.split})"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:run", args=[self.pk])

    @property
    def splits(self) -> tuple[str, ...]:
        return EVALUATED_SPLITS.get(self.split, (self.split,))

    def headline(self) -> dict[str, dict]:
        """Per split, the Mean of Vertebrae and Mean of Spine cells of the stored summary."""
        table = self.summary.get("table2") if self.summary else None
        if not table:
            return {}
        out = {}
        for index, column in enumerate(table["columns"]):
            rows = {row["key"]: row["cells"][index] for row in table["rows"]}
            out[column["key"]] = {
                key: rows[key] for key in (table2.MEAN_OF_VERTEBRAE, table2.MEAN_OF_SPINE)
            }
        return out


class CaseResultQuerySet(models.QuerySet):
    def evaluated(self):
        return self.filter(status=OK)

    def scored(self):
        """The cases the tables average: the evaluated ones, and those without a prediction
        when the run scores them as empty predictions."""
        return self.filter(scored=True)

    def problems(self):
        """Cases of the split that were not evaluated: missing, mismatched or unreadable."""
        return self.exclude(status=OK)

    def in_split(self, split: str):
        return self.filter(split=split)

    def for_cases(self, cases):
        """Restrict to the cases of a ``Case`` queryset (for instance the browse filters)."""
        return self.filter(case_id__in=cases.values("case_id"))

    def worst_first(self):
        return self.order_by(models.F("mean_dice").asc(nulls_first=True), "case_id")

    def as_records(self) -> list[CaseRecord]:
        """The scored rows as ``table2.CaseRecord`` (two queries, whatever the number)."""
        rows = list(self.scored().order_by("case_id"))
        values: dict[int, list[LabelMetrics]] = {row.pk: [] for row in rows}
        for label in LabelResult.objects.filter(
            case_result__in=self.scored().values("pk")
        ).order_by("case_result_id", "label"):
            values[label.case_result_id].append(label.metrics())
        return [
            CaseRecord(
                case_id=row.case_id,
                split=row.split,
                source=row.source,
                anomaly=row.anomaly,
                mean_dice=row.mean_dice,
                mean_hd95_mm=row.mean_hd95_mm,
                spine_dice=row.spine_dice,
                spine_hd95_mm=row.spine_hd95_mm,
                labels=tuple(values[row.pk]),
                z_spacing_mm=row.z_spacing_mm,
            )
            for row in rows
        ]


class CaseResult(models.Model):
    Status = CaseStatus

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="cases")
    # The catalog row while it exists; case_id keeps the result readable without it.
    catalog_case = models.ForeignKey(
        Case, on_delete=models.SET_NULL, null=True, blank=True, related_name="evaluations"
    )
    case_id = models.CharField(max_length=128)
    split = models.CharField(max_length=64)
    source = models.CharField(max_length=32)
    anomaly = models.CharField(max_length=16, blank=True)  # curated, when evaluated
    status = models.CharField(max_length=16, choices=CaseStatus.choices)
    scored = models.BooleanField(default=False)  # counted in the tables (see scored())
    error = models.TextField(blank=True)
    prediction_path = models.CharField(max_length=1024, blank=True)  # absolute
    reference_path = models.CharField(max_length=1024, blank=True)  # absolute
    # The case's "Mean of Vertebrae" and binary-spine metrics.
    mean_dice = models.FloatField(null=True, blank=True)
    mean_hd95_mm = models.FloatField(null=True, blank=True)
    mean_assd_mm = models.FloatField(null=True, blank=True)
    mean_nsd = models.FloatField(null=True, blank=True)
    spine_dice = models.FloatField(null=True, blank=True)
    spine_hd95_mm = models.FloatField(null=True, blank=True)
    level_errors = models.PositiveSmallIntegerField(default=0)  # vertebrae mostly mislabelled
    off_by_one = models.PositiveSmallIntegerField(default=0)  # of those, by one level
    messages = models.JSONField(default=list, blank=True)  # level errors and count call-outs
    # The level errors and call-outs summarised, a few sentences (messages: per vertebra).
    level_summary = models.JSONField(default=list, blank=True)
    z_spacing_mm = models.FloatField(null=True, blank=True)  # slice spacing of the ground truth
    seconds = models.FloatField(null=True, blank=True)

    objects = CaseResultQuerySet.as_manager()

    class Meta:
        ordering = ["case_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "case_id"], name="one_result_per_case")
        ]
        indexes = [models.Index(fields=["run", "status", "split"])]

    def __str__(self) -> str:
        return f"{self.case_id} in run {self.run_id}"


class LabelResultQuerySet(models.QuerySet):
    def of_label(self, label: int):
        return self.filter(label=label)

    def level_error(self, kind: str | None):
        """Vertebrae of the ground truth mostly labelled as a neighbouring level
        (``off_by_one``), as a level further away (``other_level``), or covered by no predicted
        vertebra (``not_found``); None: no restriction."""
        if kind is None:
            return self
        if kind == "off_by_one":
            return self.filter(off_by_one=True)
        if kind == "other_level":
            return self.filter(predicted_as__isnull=False, off_by_one=False).exclude(
                predicted_as=models.F("label")
            )
        if kind == "not_found":
            return self.filter(predicted_as__isnull=True, ref_voxels__gt=0)
        raise ValueError(f"unknown level error kind {kind!r}")

    def worst_first(self):
        return self.order_by("dice", models.F("hd95_mm").desc(nulls_first=True), "case_result_id")


# The fields a LabelResult stores of a ctspine.metrics.LabelMetrics (the name follows the label).
METRIC_FIELDS = tuple(f.name for f in fields(LabelMetrics) if f.name != "name")


class LabelResult(models.Model):
    """One vertebra of one case: a stored ``ctspine.metrics.LabelMetrics`` (same field names,
    same units), with its run and case."""

    # run is the case result's run, repeated so that per-label queries need no join.
    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="labels")
    case_result = models.ForeignKey(CaseResult, on_delete=models.CASCADE, related_name="labels")
    label = models.PositiveSmallIntegerField()  # 1-25
    dice = models.FloatField()
    hd95_mm = models.FloatField(null=True, blank=True)
    assd_mm = models.FloatField(null=True, blank=True)
    nsd = models.FloatField()
    ref_voxels = models.BigIntegerField()
    pred_voxels = models.BigIntegerField()
    # The predicted vertebra covering most of the reference one (null: none, or pred-only).
    predicted_as = models.PositiveSmallIntegerField(null=True, blank=True)
    off_by_one = models.BooleanField(default=False)

    objects = LabelResultQuerySet.as_manager()

    class Meta:
        ordering = ["case_result", "label"]
        constraints = [
            models.UniqueConstraint(fields=["case_result", "label"], name="one_result_per_label")
        ]
        indexes = [models.Index(fields=["run", "label", "dice"])]

    def __str__(self) -> str:
        return f"{self.name} of {self.case_result_id}"

    @classmethod
    def from_metrics(cls, metrics: LabelMetrics, **related) -> LabelResult:
        """An unsaved row of ``metrics``; ``related``: ``run`` and ``case_result``."""
        return cls(**{name: getattr(metrics, name) for name in METRIC_FIELDS}, **related)

    def metrics(self) -> LabelMetrics:
        return LabelMetrics(
            name=label_name(self.label), **{name: getattr(self, name) for name in METRIC_FIELDS}
        )

    @property
    def name(self) -> str:
        return label_name(self.label)

    @property
    def predicted_name(self) -> str | None:
        return None if self.predicted_as is None else label_name(self.predicted_as)
