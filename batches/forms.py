"""The form that starts a batch: split, catalog filters, mode and name."""

from __future__ import annotations

from django import forms
from django.conf import settings

from batches.services import FILTERS, BatchError, parse_filters
from evaluation.models import EVALUATED_SPLITS
from inference.forms import ModeField


class BatchForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Default: split and mode.")
    split = forms.ChoiceField(
        choices=[(s, s) for s in EVALUATED_SPLITS],
        initial="all",
        help_text="all = test_public and test_private, as in the paper's Table 2.",
    )
    filters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "anomaly=lumbarization"}),
        help_text="Optional catalog filters, one name=value per line (a value may contain"
        " spaces; repeat a name on another line for several values), as on the browse page: "
        + ", ".join(sorted(FILTERS))
        + ".",
    )
    mode = ModeField(label="Mode")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["mode"].initial = settings.CTSPINE_NNUNET_MODE

    def clean_filters(self) -> dict[str, list[str]]:
        # One filter per line, not per word: a value (e.g. q=...) may contain spaces.
        lines = [line for line in self.cleaned_data["filters"].splitlines() if line.strip()]
        try:
            return parse_filters(lines)
        except BatchError as exc:
            raise forms.ValidationError(exc.message) from exc
