"""Pages: the upload form, the job list, a job's result page, cancel, downloads, and the
"segment this case" form post. Everything needs a login; other users' jobs and files are 404.
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from inference import jobs, services, upload_handlers
from inference.demo_model import model_notice
from inference.forms import SegmentCaseForm, UploadForm
from inference.jobs import JobInputError, JobStateError
from inference.model_settings import model_error_message, model_status
from inference.models import SegmentationJob
from inference.nnunet.config import ModelConfigError
from inference.presentation import metrics_table
from inference.uploads import UploadError
from viewer.models import Case

PAGE_SIZE = 50
# What the viewer's layer switch calls the job's label maps.
LAYER_TITLES = json.dumps(
    {"labels": "Prediction", "reference": "Ground truth", "compare": "Comparison"}
)


def _upload_page(request, form, model, *, status: int = 200, refusal: str = ""):
    context = {
        "form": form,
        "model": model,
        "refusal": refusal,
        "limit_mb": services.upload_limit_bytes() >> 20,
    }
    return render(request, "inference/upload.html", context, status=status)


@csrf_exempt  # CSRF is checked in _receive_upload, once the streaming handler is installed
@login_required
def upload_new(request):
    """The upload form; a POST checks, stores and queues, then shows the job."""
    model = model_status()
    if request.method != "POST":
        return _upload_page(request, UploadForm(), model)
    if not model.available:  # refused before a byte of the body is read
        return _upload_page(request, UploadForm(), model, status=503)
    if upload_handlers.sent_in_chunks(request):
        refusal = upload_handlers.CHUNKED_MESSAGE
        return _upload_page(request, UploadForm(), model, status=411, refusal=refusal)
    limit = services.upload_limit_bytes()
    if upload_handlers.declared_too_large(request, limit_bytes=limit):
        refusal = services.too_large_message()
        return _upload_page(request, UploadForm(), model, status=413, refusal=refusal)
    handler = upload_handlers.install(request, directory=services.incoming_dir(), limit_bytes=limit)
    try:
        return _receive_upload(request, handler, model)
    finally:
        handler.discard()


@csrf_protect
def _receive_upload(request, handler, model):
    form = UploadForm(request.POST, request.FILES)
    if handler.too_large:
        refusal = services.too_large_message()
        return _upload_page(request, UploadForm(), model, status=413, refusal=refusal)
    if not form.is_valid():
        return _upload_page(request, form, model, status=400)
    label = form.cleaned_data.get("label")
    try:
        _, job = services.create_upload_job(
            user=request.user,
            image=form.cleaned_data["image"].incoming(),
            label=label.incoming() if label else None,
            mode=form.cleaned_data["mode"],
        )
    except UploadError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _upload_page(request, form, model, status=exc.status)
    except ModelConfigError as exc:
        form.add_error(None, model_error_message(exc))
        return _upload_page(request, form, model, status=503)
    return redirect(job)


@login_required
@require_GET
def job_list(request):
    own = SegmentationJob.objects.visible_to(request.user).select_related("upload", "case")
    page = Paginator(own, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "inference/job_list.html", {"page": page})


def own_job(request, job_id: int) -> SegmentationJob:
    """The signed-in user's job ``job_id``; 404 for anyone else's, as for one that is not there."""
    return get_object_or_404(
        SegmentationJob.objects.visible_to(request.user).select_related("upload", "case"),
        pk=job_id,
    )


@login_required
@require_GET
def job_detail(request, job_id: int):
    job = own_job(request, job_id)
    context = {
        "job": job,
        "table": metrics_table(job.metrics, job.centroids),
        "api_base": reverse("inference:api-job-detail", args=[job.pk]),
        "layer_titles": LAYER_TITLES,
        "files": job.file_names(),
        "model_notice": model_notice(job.model),
    }
    return render(request, "inference/job_detail.html", context)


@login_required
@require_POST
def job_cancel(request, job_id: int):
    job = own_job(request, job_id)
    try:
        services.cancel_job(job)
    except JobStateError:
        pass  # finished meanwhile: the page shows how
    return redirect(job)


@login_required
@require_GET
def job_file(request, job_id: int, which: str):
    """Download a job's ``image``, ``prediction`` or ``reference`` (ground truth) as NIfTI."""
    job = own_job(request, job_id)
    if which not in job.file_names():
        raise Http404(f"job {job.pk} has no {which} file")
    try:
        files = jobs.job_files(job)
    except JobInputError:
        raise Http404("this job's files are gone") from None
    path = {"image": files.image, "prediction": files.prediction, "reference": files.reference}[
        which
    ]
    if path is None or not path.exists():
        raise Http404(f"job {job.pk} has no {which} file")
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    response = FileResponse(
        open(path, "rb"), as_attachment=True, filename=f"job{job.pk}-{which}{suffix}"
    )
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_POST
def case_segment(request, case_id: str):
    """The "segment this case" button of a dataset case page: queue a job, show it."""
    case = get_object_or_404(Case, case_id=case_id)
    form = SegmentCaseForm(request.POST)
    mode = form.cleaned_data.get("mode") if form.is_valid() else None
    try:
        job = services.create_job(user=request.user, case=case, mode=mode or None)
    except JobInputError as exc:
        return _refused(request, case, exc.message, status=exc.status)
    except ModelConfigError as exc:
        return _refused(request, case, model_error_message(exc), status=503)
    return redirect(job)


def _refused(request, case, message: str, *, status: int):
    return render(
        request, "inference/refused.html", {"case": case, "message": message}, status=status
    )
