"""The case search parameters, shared by the search API, the browse page and the evaluation
pages. Filters that mean more than one field lookup (anomaly, vertebra, downloaded, q) delegate
to a ``CaseQuerySet`` method, which is where their meaning is defined; the ranges
(``min/max_slices`` on ``dim_z``, ``min/max_z_spacing`` on ``spacing_z``) and ``position`` are
plain field lookups. The ``help_text`` of each filter is its description in the OpenAPI schema."""

from __future__ import annotations

import django_filters
from django import forms

from ctspine.dataset.layout import SOURCES
from ctspine.dataset.metadata import ANOMALIES, POSITIONS, SPLITS
from ctspine.labels import parse_label
from viewer.models import Case


class LabelListWidget(forms.TextInput):
    """Accepts ``vertebra=L1,L2`` and ``vertebra=L1&vertebra=L2`` alike."""

    def value_from_datadict(self, data, files, name):
        values = data.getlist(name) if hasattr(data, "getlist") else [data.get(name)]
        return ",".join(v for v in values if v)


class LabelListField(forms.CharField):
    widget = LabelListWidget

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return []
        try:
            return sorted({parse_label(token) for token in value.split(",") if token.strip()})
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class LabelListFilter(django_filters.Filter):
    field_class = LabelListField


def _choices(values):
    return [(v, v) for v in values]


class CaseFilter(django_filters.FilterSet):
    source = django_filters.MultipleChoiceFilter(
        choices=_choices(SOURCES), distinct=False, help_text="source sub-dataset (repeatable)"
    )
    split = django_filters.MultipleChoiceFilter(
        choices=_choices(SPLITS), distinct=False, help_text="official split (repeatable)"
    )
    anomaly = django_filters.ChoiceFilter(
        choices=_choices((*ANOMALIES, "any", "none")),
        method="filter_anomaly",
        help_text="transitional vertebra",
    )
    anomaly_source = django_filters.ChoiceFilter(
        choices=_choices(("curated", "labels")),
        method="filter_nothing",
        help_text="curated (published lists, default) or labels (label-derived hint)",
    )
    vertebra = LabelListFilter(
        method="filter_vertebra",
        label="Vertebrae (all present)",
        help_text="C1..L6 or 1..25, comma-separated or repeated; all must be present",
    )
    downloaded = django_filters.ChoiceFilter(
        choices=_choices(("true", "false")), method="filter_downloaded"
    )
    min_slices = django_filters.NumberFilter(
        field_name="dim_z",
        lookup_expr="gte",
        min_value=0,
        help_text="at least this many axial slices",
    )
    max_slices = django_filters.NumberFilter(
        field_name="dim_z",
        lookup_expr="lte",
        min_value=0,
        help_text="at most this many axial slices",
    )
    min_z_spacing = django_filters.NumberFilter(
        field_name="spacing_z", lookup_expr="gte", help_text="slice spacing at least (mm)"
    )
    max_z_spacing = django_filters.NumberFilter(
        field_name="spacing_z", lookup_expr="lte", help_text="slice spacing at most (mm)"
    )
    position = django_filters.ChoiceFilter(
        choices=_choices(POSITIONS),
        field_name="scan_position",
        help_text="patient position (from Path.csv)",
    )
    q = django_filters.CharFilter(
        method="filter_q", label="Case id contains", help_text="case id contains"
    )
    ordering = django_filters.OrderingFilter(
        fields=(
            ("case_id", "case_id"),
            ("source", "source"),
            ("split", "split"),
            ("dim_z", "slices"),
            ("spacing_z", "z_spacing"),
            ("curated_anomaly", "anomaly"),
            ("vertebra_mask", "vertebrae"),
        ),
        help_text="sort key; '-' in front for descending",
    )

    class Meta:
        model = Case
        fields: list[str] = []

    def filter_anomaly(self, queryset, name, value):
        source = self.form.cleaned_data.get("anomaly_source") or "curated"
        return queryset.with_anomaly(value, source=source)

    def filter_nothing(self, queryset, name, value):
        return queryset  # anomaly_source only qualifies the anomaly filter

    def filter_downloaded(self, queryset, name, value):
        return queryset.downloaded(value == "true")

    def filter_vertebra(self, queryset, name, value):
        return queryset.with_vertebrae(value)

    def filter_q(self, queryset, name, value):
        return queryset.id_contains(value.strip())


PARAMETERS = frozenset(CaseFilter.base_filters) | {"page", "page_size", "format", "view"}


def unknown_parameters(query) -> list[str]:
    """Query parameters the search does not know (typos would otherwise be silently ignored)."""
    return sorted(set(query) - PARAMETERS)
