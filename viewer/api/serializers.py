from rest_framework import serializers

from viewer.models import Case, VertebraStats


class CaseListSerializer(serializers.ModelSerializer):
    shape = serializers.ListField(child=serializers.IntegerField(), allow_null=True, read_only=True)
    spacing = serializers.ListField(child=serializers.FloatField(), allow_null=True, read_only=True)
    vertebrae = serializers.ListField(
        source="vertebra_names", child=serializers.CharField(), read_only=True
    )
    anomalies = serializers.DictField(read_only=True)

    class Meta:
        model = Case
        fields = [
            "case_id",
            "source",
            "split",
            "anomalies",
            "shape",
            "spacing",
            "vertebrae",
            "downloaded",
            "error",
        ]


class VertebraStatsSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)
    centroid_mm = serializers.SerializerMethodField()

    class Meta:
        model = VertebraStats
        fields = [
            "label",
            "name",
            "voxel_count",
            "volume_cm3",
            "centroid_mm",
            "z_min_mm",
            "z_max_mm",
        ]

    def get_centroid_mm(self, obj) -> list[float]:
        return [obj.centroid_x, obj.centroid_y, obj.centroid_z]


class CaseDetailSerializer(CaseListSerializer):
    vertebra_stats = VertebraStatsSerializer(source="vertebrae", many=True, read_only=True)

    class Meta(CaseListSerializer.Meta):
        fields = CaseListSerializer.Meta.fields + [
            "image_path",
            "label_path",
            "has_label",
            "axis_codes",
            "dtype",
            "image_bytes",
            "label_bytes",
            "series_description",
            "scan_position",
            "slice_thickness_mm",
            "kernel",
            "lumbar_count",
            "last_vertebra",
            "ingested_at",
            "vertebra_stats",
        ]


class LabelSerializer(serializers.Serializer):
    """One row of ``GET /api/labels/`` (ctspine.labels.Label)."""

    value = serializers.IntegerField(help_text="label value in the segmentation, 1-25")
    name = serializers.CharField(help_text="vertebra, C1..L6")
    region = serializers.CharField(help_text="cervical, thoracic or lumbar")
    colour = serializers.CharField(help_text="display colour, #rrggbb")


class WindowPresetSerializer(serializers.Serializer):
    """One row of ``GET /api/windows/`` (ctspine.labels.WindowPreset)."""

    name = serializers.CharField()
    width = serializers.FloatField(help_text="window width (HU)")
    level = serializers.FloatField(help_text="window level (HU)")
    title = serializers.CharField()


class FacetsSerializer(serializers.Serializer):
    """``GET /api/cases/facets/`` (viewer.facets.facet_counts): case counts per value."""

    total = serializers.IntegerField()
    source = serializers.DictField(child=serializers.IntegerField())
    split = serializers.DictField(child=serializers.IntegerField())
    anomaly = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="curated lists: lumbarization, sacralization, any, none",
    )
    anomaly_labels = serializers.DictField(
        child=serializers.IntegerField(), help_text="what the labels imply, same keys as anomaly"
    )
    vertebra = serializers.DictField(child=serializers.IntegerField(), help_text="C1..L6")
    position = serializers.DictField(child=serializers.IntegerField())
    downloaded = serializers.DictField(child=serializers.IntegerField(), help_text="yes, no")
