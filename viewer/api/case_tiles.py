"""Tile endpoints of dataset cases: resolve the case's files, then hand over to tile_service."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse
from django.views.decorators.http import require_GET

from viewer.dataset.layout import PathOutsideRoot, resolve_inside
from viewer.models import Case
from viewer.permissions import dataset_visible_to
from viewer.tile_service import (
    error_response,
    projection_response,
    slice_response,
    thumbnail_response,
    volume_response,
    voxel_response,
)
from viewer.volume_store import VolumeSet


class Unavailable(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def case_volumes(case_id: str, user) -> tuple[Case, VolumeSet]:
    if not dataset_visible_to(user):
        raise Unavailable(403, "Sign in to see the dataset.")
    case = Case.objects.filter(case_id=case_id).first()
    if case is None:
        raise Unavailable(404, f"no case {case_id!r} in the catalog")
    if not case.downloaded:
        raise Unavailable(
            404, f"case {case_id} is not downloaded: its image is not in the data root"
        )
    if case.error:
        raise Unavailable(409, f"case {case_id} could not be ingested: {case.error}")
    root = settings.CTSPINE_DATA_ROOT
    try:
        image = resolve_inside(root, case.image_path)
        labels = resolve_inside(root, case.label_path) if case.has_label else None
    except PathOutsideRoot as exc:
        raise Unavailable(409, str(exc)) from None
    if not image.exists():
        raise Unavailable(404, f"case {case_id} is not downloaded: {case.image_path} is missing")
    return case, VolumeSet(image=image, labels=labels, public=settings.CTSPINE_PUBLIC_DATASET)


def _with_case(handler):
    @require_GET
    def view(request, case_id: str, **kwargs):
        try:
            case, volumes = case_volumes(case_id, request.user)
        except Unavailable as exc:
            return error_response(exc.status, str(exc))
        return handler(request, case, volumes, **kwargs)

    return view


@_with_case
def case_slice(request, case, volumes, plane: str, index: int, ext: str):
    return slice_response(request, volumes, plane=plane, index=index, ext=ext)


@_with_case
def case_projection(request, case, volumes, plane: str, ext: str):
    return projection_response(request, volumes, plane=plane, ext=ext)


@_with_case
def case_thumbnail(request, case, volumes, ext: str):
    return thumbnail_response(request, volumes, ext=ext)


@_with_case
def case_volume(request, case, volumes):
    centroids = {v.label: (v.centroid_x, v.centroid_y, v.centroid_z) for v in case.vertebrae.all()}
    return volume_response(request, volumes, centroids_mm=centroids)


@_with_case
def case_voxel(request, case, volumes):
    return voxel_response(request, volumes)


@_with_case
def case_file(request, case, volumes, which: str):
    if which not in ("image", "label"):
        return error_response(404, "files are 'image' or 'label'")
    path = volumes.image if which == "image" else volumes.labels
    if path is None:
        return error_response(404, f"case {case.case_id} has no label file")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)
