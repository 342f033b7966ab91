"""Pages: the upload form, the job list, a job's result page, cancel, downloads, and the
"segment this case" form post. Everything needs a login; other users' jobs and files are 404.
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from inference import jobs, services, upload_handlers
from inference.demo_model import model_notice
from inference.forms import SegmentCaseForm, UploadForm
from inference.model_settings import model_error_message
from inference.models import SegmentationJob
from inference.nnunet.config import ModelConfigError
from inference.presentation import metrics_table
from viewer.models import Case

PAGE_SIZE = 50
VIEWER_TEMPLATE = "viewer/_viewer.html"
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
    model = services.model_status()
    if request.method != "POST":
        return _upload_page(request, UploadForm(), model)
    if not model.available:  # refused before a byte of the body is read
        return _upload_page(request, UploadForm(), model, status=503)
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
        upload = services.create_upload(
            user=request.user,
            image=form.cleaned_data["image"].incoming(),
            label=label.incoming() if label else None,
        )
        job = services.create_job(user=request.user, upload=upload, mode=form.cleaned_data["mode"])
    except services.UploadError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _upload_page(request, form, model, status=exc.status)
    except ModelConfigError as exc:
        form.add_error(None, model_error_message(exc))
        return _upload_page(request, form, model, status=503)
    return redirect("job-detail", job_id=job.pk)


@login_required
@require_GET
def job_list(request):
    services.reap_stale_jobs()
    own = SegmentationJob.objects.visible_to(request.user).select_related("upload", "case")
    page = Paginator(own, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "inference/job_list.html", {"page": page})


def _own_job(request, job_id: int) -> SegmentationJob:
    return get_object_or_404(
        SegmentationJob.objects.visible_to(request.user).select_related("upload", "case"),
        pk=job_id,
    )


def _viewer_template() -> str | None:
    """The shared viewer's template, once it exists (the job page degrades to links without)."""
    try:
        get_template(VIEWER_TEMPLATE)
    except TemplateDoesNotExist:
        return None
    return VIEWER_TEMPLATE


@login_required
@require_GET
def job_detail(request, job_id: int):
    job = _own_job(request, job_id)
    context = {
        "job": job,
        "table": metrics_table(job.metrics, job.centroids),
        "viewer_template": _viewer_template(),
        "api_base": f"/api/jobs/{job.pk}",
        "layer_titles": LAYER_TITLES,
        "files": _download_names(job),
        "model_notice": model_notice(job.model),
    }
    return render(request, "inference/job_detail.html", context)


def _download_names(job: SegmentationJob) -> list[str]:
    names = ["image"]
    if job.status == SegmentationJob.Status.SUCCEEDED:
        names.append("prediction")
    if job.has_reference:
        names.append("reference")
    return names


@login_required
@require_POST
def job_cancel(request, job_id: int):
    job = _own_job(request, job_id)
    try:
        services.cancel_job(job)
    except services.JobStateError:
        pass  # finished meanwhile: the page shows how
    return redirect("job-detail", job_id=job.pk)


@login_required
@require_GET
def job_file(request, job_id: int, which: str):
    """Download a job's ``image``, ``prediction`` or ``reference`` (ground truth) as NIfTI."""
    job = _own_job(request, job_id)
    try:
        files = jobs.job_files(job)
    except jobs.JobInputError:
        raise Http404("this job's files are gone") from None
    path = {
        "image": files.image,
        "prediction": files.prediction if job.status == SegmentationJob.Status.SUCCEEDED else None,
        "reference": files.reference,
    }.get(which)
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
    except services.JobInputError as exc:
        return _refused(request, case, exc.message, status=exc.status)
    except ModelConfigError as exc:
        return _refused(request, case, model_error_message(exc), status=503)
    return redirect("job-detail", job_id=job.pk)


def _refused(request, case, message: str, *, status: int):
    return render(
        request, "inference/refused.html", {"case": case, "message": message}, status=status
    )
