"""Search API over the catalog: list, facets, detail, label table and window presets."""

from __future__ import annotations

from dataclasses import asdict

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView, ListAPIView, RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from ctspine.labels import LABELS, WINDOW_PRESETS
from viewer.api.pagination import CasePagination
from viewer.api.serializers import (
    CaseDetailSerializer,
    CaseListSerializer,
    FacetsSerializer,
    LabelSerializer,
    WindowPresetSerializer,
)
from viewer.facets import facet_counts
from viewer.filters import CaseFilter, unknown_parameters
from viewer.models import Case


class CaseFilterBackend(DjangoFilterBackend):
    """django-filter's backend, but a parameter the search does not know is a 400 naming it, not
    silently ignored (a typo would otherwise return every case)."""

    def filter_queryset(self, request, queryset, view):
        unknown = unknown_parameters(request.query_params)
        if unknown:
            raise ValidationError({name: ["unknown parameter"] for name in unknown})
        return super().filter_queryset(request, queryset, view)


class CaseSearch:
    """What the case list and the facets share: the catalog, filtered by :class:`CaseFilter`."""

    queryset = Case.objects.all()
    filter_backends = [CaseFilterBackend]
    filterset_class = CaseFilter


class CaseList(CaseSearch, ListAPIView):
    serializer_class = CaseListSerializer
    pagination_class = CasePagination


class CaseFacets(CaseSearch, GenericAPIView):
    pagination_class = None

    @extend_schema(filters=True, responses=FacetsSerializer)
    def get(self, request):
        return Response(facet_counts(self.filter_queryset(self.get_queryset())))


class CaseDetail(RetrieveAPIView):
    queryset = Case.objects.prefetch_related("vertebrae")
    serializer_class = CaseDetailSerializer
    lookup_field = "case_id"


# The label table and the presets answer ctspine's dataclasses as they are; the serializers
# document them.


class LabelTable(APIView):
    @extend_schema(responses=LabelSerializer(many=True))
    def get(self, request):
        return Response([asdict(label) for label in LABELS])


class WindowPresets(APIView):
    @extend_schema(responses=WindowPresetSerializer(many=True))
    def get(self, request):
        return Response([asdict(preset) for preset in WINDOW_PRESETS.values()])
