"""Pages of the benchmark: the list of evaluation runs, a run's tables, a run's case list."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from evaluation.models import EvaluationRun
from evaluation.reports import (
    FILTER_CHOICES,
    case_rows,
    query_string,
    run_page_context,
    select_cases,
)
from viewer.permissions import dataset_page

CASES_PER_PAGE = 100


@dataset_page
def run_list(request):
    runs = [(run, run.headline()) for run in EvaluationRun.objects.newest_first()]
    return render(request, "evaluation/run_list.html", {"runs": runs})


@dataset_page
def run_page(request, run_id: int):
    run = get_object_or_404(EvaluationRun, pk=run_id)
    selection = select_cases(run, request.GET)
    context = run_page_context(run, selection)
    return render(request, "evaluation/run.html", context, status=400 if selection.errors else 200)


@dataset_page
def run_cases(request, run_id: int):
    run = get_object_or_404(EvaluationRun, pk=run_id)
    selection = select_cases(run, request.GET)
    rows, by_label = case_rows(selection)
    context = {
        "run": run,
        "selection": selection,
        "by_label": by_label,
        "page": Paginator(rows, CASES_PER_PAGE).get_page(request.GET.get("page")),
        "filter_query": query_string(selection.filters),
        "choices": FILTER_CHOICES,
    }
    return render(
        request, "evaluation/cases.html", context, status=400 if selection.errors else 200
    )
