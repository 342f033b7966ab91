"""The case search parameters, shared by the API and the browse page. Each filter delegates to a
``CaseQuerySet`` method, which is where its meaning is defined."""

from __future__ import annotations

import django_filters
from django import forms

from ctspine.dataset.layout import SOURCES
from ctspine.dataset.metadata import ANOMALIES, POSITIONS, SPLITS
from ctspine.labels import LABEL_BY_VALUE, parse_label
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
    source = django_filters.MultipleChoiceFilter(choices=_choices(SOURCES), distinct=False)
    split = django_filters.MultipleChoiceFilter(choices=_choices(SPLITS), distinct=False)
    anomaly = django_filters.ChoiceFilter(
        choices=_choices((*ANOMALIES, "any", "none")), method="filter_anomaly"
    )
    anomaly_source = django_filters.ChoiceFilter(
        choices=_choices(("curated", "labels")), method="filter_nothing"
    )
    vertebra = LabelListFilter(method="filter_vertebra", label="Vertebrae (all present)")
    downloaded = django_filters.ChoiceFilter(
        choices=_choices(("true", "false")), method="filter_downloaded"
    )
    min_slices = django_filters.NumberFilter(field_name="dim_z", lookup_expr="gte", min_value=0)
    max_slices = django_filters.NumberFilter(field_name="dim_z", lookup_expr="lte", min_value=0)
    min_z_spacing = django_filters.NumberFilter(field_name="spacing_z", lookup_expr="gte")
    max_z_spacing = django_filters.NumberFilter(field_name="spacing_z", lookup_expr="lte")
    position = django_filters.ChoiceFilter(choices=_choices(POSITIONS), field_name="scan_position")
    q = django_filters.CharFilter(method="filter_q", label="Case id contains")
    ordering = django_filters.OrderingFilter(
        fields=(
            ("case_id", "case_id"),
            ("source", "source"),
            ("split", "split"),
            ("dim_z", "slices"),
            ("spacing_z", "z_spacing"),
            ("curated_anomaly", "anomaly"),
            ("vertebra_mask", "vertebrae"),
        )
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


def vertebra_choices() -> list[tuple[int, str]]:
    return [(value, label.name) for value, label in LABEL_BY_VALUE.items()]
