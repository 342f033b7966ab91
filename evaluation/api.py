"""JSON API of the benchmark: the runs, and one run's tables with the same data as its page."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.response import Response

from evaluation.models import EvaluationRun
from evaluation.reports import run_report, select_cases
from evaluation.serializers import RunReportSerializer, RunSerializer
from viewer.api.catalog import CaseSearch


class RunList(ListAPIView):
    pagination_class = None
    serializer_class = RunSerializer

    def get_queryset(self):
        return EvaluationRun.objects.newest_first()

    @extend_schema(operation_id="evaluations_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class WorstParameter(serializers.Serializer):
    worst = serializers.IntegerField(
        min_value=0, default=3, help_text="worst cases per vertebra (default 3)"
    )


class RunDetail(CaseSearch, GenericAPIView):
    """The case search of /api/cases/ restricts the tables: CaseSearch's filter backend gives the
    schema its parameters (with their types); select_cases applies them."""

    pagination_class = None

    @extend_schema(
        operation_id="evaluations_detail",
        filters=True,
        parameters=[WorstParameter],
        responses=RunReportSerializer,
    )
    def get(self, request, run_id: int):
        """Table 2 per split, by source and for the anomaly cases, level errors, worst cases,
        per-vertebra Dice of every case, and the problems; restricted by the case search
        parameters of /api/cases/ (e.g. ``anomaly=lumbarization``)."""
        run = get_object_or_404(EvaluationRun, pk=run_id)
        query = request.query_params.copy()
        worst = WorstParameter(data={"worst": query.pop("worst", ["3"])[-1]})
        worst.is_valid(raise_exception=True)
        selection = select_cases(run, query)
        if selection.errors:
            raise ValidationError(selection.errors)
        run.report = run_report(run, selection, worst=worst.validated_data["worst"])
        return Response(RunReportSerializer(run, context={"request": request}).data)
