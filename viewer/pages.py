"""Server-rendered pages of the dataset: the browse page and the case page."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from ctspine.dataset.layout import DATASET_SOURCES
from ctspine.dataset.metadata import ANOMALIES, POSITIONS, SPLITS
from ctspine.labels import LABELS
from viewer.facets import facet_counts
from viewer.filters import CaseFilter
from viewer.models import Case
from viewer.permissions import dataset_page

PAGE_SIZE = 50
SORTABLE = [
    ("case_id", "Case"),
    ("source", "Source"),
    ("split", "Split"),
    ("slices", "Slices"),
    ("z_spacing", "Slice spacing"),
    ("anomaly", "Anomaly"),
    ("vertebrae", "Vertebrae"),
]


@dataset_page
def browse(request):
    case_filter = CaseFilter(request.GET, queryset=Case.objects.all())
    valid = case_filter.is_valid()
    cases = case_filter.qs if valid else Case.objects.none()
    page = Paginator(cases, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "filter": case_filter,
        "errors": None if valid else case_filter.errors,
        "facets": facet_counts(cases),
        "page": page,
        "view": "grid" if request.GET.get("view") == "grid" else "table",
        "sortable": SORTABLE,
        "ordering": request.GET.get("ordering", ""),
        "selected": {name: request.GET.getlist(name) for name in ("source", "split", "vertebra")},
        "choices": {
            "source": DATASET_SOURCES,
            "split": SPLITS,
            "anomaly": (*ANOMALIES, "any", "none"),
            "position": POSITIONS,
        },
        "labels": LABELS,
    }
    return render(request, "viewer/browse.html", context, status=200 if valid else 400)


@dataset_page
def case_page(request, case_id: str):
    case = get_object_or_404(Case.objects.prefetch_related("vertebrae"), case_id=case_id)
    return render(request, "viewer/case.html", {"case": case, "labels": LABELS})
