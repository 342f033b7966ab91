"""Pages of batches (staff only): the list, the form that starts one, a batch's page with its
cases and progress, the progress as JSON for the page's polling, and cancel."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from batches import services
from batches.forms import BatchForm
from batches.models import Batch
from inference.model_settings import model_error_message
from inference.nnunet.config import ModelConfigError


def staff_only(view):
    """Anonymous users go to the login page; signed-in users who are not staff get 403."""

    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("batches are for staff")
        return view(request, *args, **kwargs)

    return checked


@staff_only
@require_GET
def batch_list(request):
    batches = Batch.objects.select_related("evaluation", "created_by")
    return render(request, "batches/batch_list.html", {"batches": batches})


@staff_only
def batch_new(request):
    form = BatchForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        status = 400 if request.method == "POST" else 200
        return render(request, "batches/batch_new.html", {"form": form}, status=status)
    try:
        batch = services.create_batch(user=request.user, **form.cleaned_data)
    except services.BatchError as exc:
        form.add_error(None, exc.message)
        return render(request, "batches/batch_new.html", {"form": form}, status=exc.status)
    except ModelConfigError as exc:
        form.add_error(None, model_error_message(exc))
        return render(request, "batches/batch_new.html", {"form": form}, status=503)
    return redirect(batch)


@staff_only
@require_GET
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(Batch.objects.select_related("evaluation"), pk=batch_id)
    context = {"batch": batch, "progress": batch.progress(), "jobs": batch.jobs()}
    return render(request, "batches/batch_detail.html", context)


@staff_only
@require_GET
def batch_status(request, batch_id: int):
    batch = get_object_or_404(Batch, pk=batch_id)
    body = {"status": batch.status, **batch.progress().as_dict()}
    return JsonResponse(body, headers={"Cache-Control": "private, no-store"})


@staff_only
@require_POST
def batch_cancel(request, batch_id: int):
    batch = get_object_or_404(Batch, pk=batch_id)
    try:
        services.cancel_batch(batch)
    except services.BatchError:
        pass  # ended meanwhile: the page shows how
    return redirect(batch)
