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
