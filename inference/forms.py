"""Forms of the upload page and of the "segment this case" button."""

from __future__ import annotations

from django import forms
from django.conf import settings

from inference.models import SegmentationJob

ACCEPTED_TYPES = ".nii,.nii.gz,.gz,.zip,application/gzip,application/zip"


class ModeField(forms.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=SegmentationJob.Mode.choices, widget=forms.RadioSelect, **kwargs)


class UploadForm(forms.Form):
    """A CT (NIfTI or a zip of one DICOM series), optional ground truth, and the mode. Only the
    presence of the files is checked here; their content is checked by services.create_upload."""

    image = forms.FileField(
        label="CT image",
        help_text="A .nii or .nii.gz file, or a .zip of the files of one DICOM series.",
        widget=forms.ClearableFileInput(attrs={"accept": ACCEPTED_TYPES}),
    )
    label = forms.FileField(
        label="Ground truth (optional)",
        required=False,
        help_text="A NIfTI label map on the image's grid with CTSpine1K values: 0 background, "
        "1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6. With it, the result is compared per vertebra.",
        widget=forms.ClearableFileInput(attrs={"accept": ".nii,.nii.gz,.gz,application/gzip"}),
    )
    mode = ModeField(label="Mode")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["mode"].initial = settings.CTSPINE_NNUNET_MODE


class SegmentCaseForm(forms.Form):
    mode = ModeField(required=False)
