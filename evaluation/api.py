"""JSON API of the benchmark: the runs, and one run's tables with the same data as its page."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation.models import EvaluationRun
from evaluation.reports import run_header, run_report, select_cases


class RunList(APIView):
    pagination_class = None

    @extend_schema(operation_id="evaluations_list", responses=dict)
    def get(self, request):
        return Response(
            [
                {
                    **run_header(run),
                    "url": request.build_absolute_uri(f"/api/evaluations/{run.pk}/"),
                }
                for run in EvaluationRun.objects.newest_first()
            ]
        )


class RunDetail(APIView):
    @extend_schema(
        operation_id="evaluations_detail",
        parameters=[
            OpenApiParameter("worst", int, description="worst cases per vertebra (default 3)"),
        ],
        responses=dict,
    )
    def get(self, request, run_id: int):
        """Table 2 per split, by source and for the anomaly cases, level errors, worst cases,
        per-vertebra Dice of every case, and the problems; restricted by the case search
        parameters of /api/cases/ (e.g. ``anomaly=lumbarization``)."""
        run = get_object_or_404(EvaluationRun, pk=run_id)
        query = request.query_params.copy()
        worst = query.pop("worst", ["3"])[-1]
        if not worst.isdigit():
            raise ValidationError({"worst": ["a whole number"]})
        selection = select_cases(run, query)
        if selection.errors:
            raise ValidationError(selection.errors)
        return Response(run_report(run, selection, worst=int(worst)))
