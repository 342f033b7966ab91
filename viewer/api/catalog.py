"""Search API over the catalog: list, facets, detail, label table and window presets."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from ctspine.labels import LABELS, WINDOW_PRESETS
from viewer.api.pagination import CasePagination
from viewer.api.serializers import CaseDetailSerializer, CaseListSerializer
from viewer.facets import facet_counts
from viewer.filters import CaseFilter, unknown_parameters
from viewer.models import Case

FILTER_PARAMETERS = [
    OpenApiParameter(name, description=desc)
    for name, desc in [
        ("source", "COLONOG, HNSCC-3DCT-RT, MSD-T10, COVID-19 (repeatable)"),
        ("split", "train, test_public, test_private (repeatable)"),
        ("anomaly", "lumbarization, sacralization, any, none"),
        ("anomaly_source", "curated (published lists, default) or labels (label-derived hint)"),
        ("vertebra", "C1..L6 or 1..25, comma-separated or repeated; all must be present"),
        ("downloaded", "true or false"),
        ("min_slices", "at least this many axial slices"),
        ("max_slices", "at most this many axial slices"),
        ("min_z_spacing", "slice spacing at least (mm)"),
        ("max_z_spacing", "slice spacing at most (mm)"),
        ("position", "prone or supine (from Path.csv)"),
        ("q", "case id contains"),
        (
            "ordering",
            "case_id, source, split, slices, z_spacing, anomaly, vertebrae; '-' for descending",
        ),
    ]
]


def filtered_cases(request):
    """Apply the search parameters of ``request`` or raise a 400 naming the bad parameter."""
    unknown = unknown_parameters(request.query_params)
    if unknown:
        raise ValidationError({name: ["unknown parameter"] for name in unknown})
    case_filter = CaseFilter(request.query_params, queryset=Case.objects.all())
    if not case_filter.is_valid():
        raise ValidationError(case_filter.errors)
    return case_filter.qs


class CaseList(APIView):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=CaseListSerializer(many=True))
    def get(self, request):
        paginator = CasePagination()
        page = paginator.paginate_queryset(filtered_cases(request), request, view=self)
        return paginator.get_paginated_response(CaseListSerializer(page, many=True).data)


class CaseFacets(APIView):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=dict)
    def get(self, request):
        return Response(facet_counts(filtered_cases(request)))


class CaseDetail(APIView):
    @extend_schema(responses=CaseDetailSerializer)
    def get(self, request, case_id: str):
        case = get_object_or_404(Case.objects.prefetch_related("vertebrae"), case_id=case_id)
        return Response(CaseDetailSerializer(case).data)


class LabelTable(APIView):
    @extend_schema(responses=dict)
    def get(self, request):
        return Response(
            [
                {"value": lab.value, "name": lab.name, "region": lab.region, "colour": lab.colour}
                for lab in LABELS
            ]
        )


class WindowPresets(APIView):
    @extend_schema(responses=dict)
    def get(self, request):
        return Response(
            [
                {"name": p.name, "title": p.title, "width": p.width, "level": p.level}
                for p in WINDOW_PRESETS.values()
            ]
        )
