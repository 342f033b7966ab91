"""The dataset catalog: one ``Case`` per CTSpine1K volume, ``VertebraStats`` per labelled vertebra."""

from __future__ import annotations

from django.db import models
from django.db.models import F
from django.urls import reverse

from ctspine.labels import LABEL_BY_VALUE, mask_of, values_of


class CaseQuerySet(models.QuerySet):
    """Every filter of the search API and the browse page is defined here, once."""

    def downloaded(self, value: bool = True):
        return self.filter(downloaded=value)

    def with_anomaly(self, kind: str, *, source: str = "curated"):
        """``kind``: lumbarization, sacralization, any or none. ``source``: ``curated`` (the
        published lists) or ``labels`` (what the label volume implies: L6 present, or L5 missing
        below a labelled L4 with image below it)."""
        field = "curated_anomaly" if source == "curated" else "label_anomaly"
        if kind == "any":
            return self.exclude(**{field: ""})
        if kind == "none":
            return self.filter(**{field: ""})
        return self.filter(**{field: kind})

    def with_vertebrae(self, values):
        """Cases in whose labels every one of ``values`` (label values 1-25) is present."""
        mask = mask_of(values)
        if not mask:
            return self
        return self.annotate(_vmask=F("vertebra_mask").bitand(mask)).filter(_vmask=mask)

    def id_contains(self, text: str):
        return self.filter(case_id__icontains=text)


class Case(models.Model):
    case_id = models.CharField(max_length=128, unique=True)
    source = models.CharField(max_length=32, db_index=True)
    split = models.CharField(max_length=16, blank=True, db_index=True)
    # Paths relative to CTSPINE_DATA_ROOT, as found on disk (or as expected when not downloaded).
    image_path = models.CharField(max_length=512, blank=True)
    label_path = models.CharField(max_length=512, blank=True)
    downloaded = models.BooleanField(default=False, db_index=True)
    has_label = models.BooleanField(default=False)

    # Geometry in RAS+ order after nibabel.as_closest_canonical (x: right, y: anterior, z: superior);
    # dim_z is the number of axial slices.
    dim_x = models.PositiveIntegerField(null=True)
    dim_y = models.PositiveIntegerField(null=True)
    dim_z = models.PositiveIntegerField(null=True, db_index=True)
    spacing_x = models.FloatField(null=True)  # mm
    spacing_y = models.FloatField(null=True)
    spacing_z = models.FloatField(null=True, db_index=True)
    axis_codes = models.CharField(max_length=3, blank=True)  # orientation as stored, e.g. "LPS"
    dtype = models.CharField(max_length=16, blank=True)
    image_bytes = models.BigIntegerField(null=True)
    label_bytes = models.BigIntegerField(null=True)
    # File identity (size, mtime in ns) at the last ingestion, to skip unchanged files.
    image_mtime_ns = models.BigIntegerField(null=True)
    label_mtime_ns = models.BigIntegerField(null=True)
    label_stats_done = models.BooleanField(default=False)

    # From Path.csv (COLONOG and HNSCC only).
    series_description = models.CharField(max_length=255, blank=True)
    scan_position = models.CharField(max_length=8, blank=True, db_index=True)
    slice_thickness_mm = models.FloatField(null=True)
    kernel = models.CharField(max_length=32, blank=True)

    # Anomalies: the curated published lists, and the hint derived from the labels.
    curated_anomaly = models.CharField(max_length=16, blank=True, db_index=True)
    label_anomaly = models.CharField(max_length=16, blank=True, db_index=True)
    vertebra_mask = models.PositiveIntegerField(default=0)  # bit v set: label v present
    lumbar_count = models.PositiveSmallIntegerField(null=True)
    last_vertebra = models.PositiveSmallIntegerField(null=True)  # most caudal label value

    error = models.TextField(blank=True)
    ingested_at = models.DateTimeField(null=True)

    objects = CaseQuerySet.as_manager()

    class Meta:
        ordering = ["case_id"]
        indexes = [models.Index(fields=["source", "split"])]

    def __str__(self) -> str:
        return self.case_id

    def get_absolute_url(self) -> str:
        return reverse("viewer:case", args=[self.case_id])

    @property
    def vertebra_values(self) -> list[int]:
        return values_of(self.vertebra_mask)

    @property
    def vertebra_names(self) -> list[str]:
        return [LABEL_BY_VALUE[v].name for v in self.vertebra_values]

    @property
    def shape(self) -> list[int] | None:
        return None if self.dim_x is None else [self.dim_x, self.dim_y, self.dim_z]

    @property
    def spacing(self) -> list[float] | None:
        return None if self.spacing_x is None else [self.spacing_x, self.spacing_y, self.spacing_z]

    @property
    def anomalies(self) -> dict:
        """Both anomaly sources, and whether they disagree (shown to the user, never hidden)."""
        return {
            "curated": self.curated_anomaly or None,
            "labels": self.label_anomaly or None,
            "disagree": bool(self.label_stats_done and self.curated_anomaly != self.label_anomaly),
        }


class VertebraStats(models.Model):
    """What the label volume says about one vertebra of one case. Positions in mm, RAS+ world."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="vertebrae")
    label = models.PositiveSmallIntegerField()
    voxel_count = models.BigIntegerField()
    volume_cm3 = models.FloatField()
    centroid_x = models.FloatField()
    centroid_y = models.FloatField()
    centroid_z = models.FloatField()
    z_min_mm = models.FloatField()
    z_max_mm = models.FloatField()

    class Meta:
        ordering = ["case", "label"]
        constraints = [models.UniqueConstraint(fields=["case", "label"], name="one_row_per_label")]

    def __str__(self) -> str:
        return f"{self.name} of case #{self.case_id}"

    @property
    def name(self) -> str:
        return LABEL_BY_VALUE[self.label].name
