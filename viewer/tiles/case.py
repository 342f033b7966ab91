"""Tile endpoints of dataset cases: resolve the case's files, then hand over to tiles.responses.

Every request reads the case's row afresh (so a case marked failed or not downloaded stops being
served at once) and checks the permission, but with one plain SELECT of the few columns tiles
need: the ORM's queryset machinery for the same row adds more than 10 % to a warm tile
(``bench/tiles.py`` prints the ratio). Resolving the files inside the data root (symlinks) is
remembered per process for a few seconds, keyed by the root and the row's paths.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

from django.conf import settings
from django.db import connections, router
from django.http import FileResponse

from ctspine.dataset.layout import PathOutsideRoot, resolve_inside
from viewer.models import Case
from viewer.permissions import DatasetAccess, dataset_visible_to
from viewer.tiles.responses import error_response
from viewer.tiles.urls import Unavailable, resolved
from viewer.tiles.volumes import VolumeSet

#: The Case columns a tile request reads; the instance loads any other field on access.
_CASE_FIELDS = ("id", "case_id", "downloaded", "error", "image_path", "label_path", "has_label")
_PATHS_TTL_S = 10.0
_PATHS_MAX = 1024
_paths: OrderedDict[tuple, tuple[float, Path, Path | None]] = OrderedDict()
_paths_lock = threading.Lock()


def _case_row(case_id: str) -> Case | None:
    """The Case ``case_id`` with :data:`_CASE_FIELDS` loaded (deferred fields load on access),
    read by one plain SELECT, or None."""
    alias = router.db_for_read(Case)
    connection = connections[alias]
    quote = connection.ops.quote_name
    # Model.from_db wants the values in the model's field order.
    fields = [f for f in Case._meta.concrete_fields if f.attname in _CASE_FIELDS]
    sql = (
        f"SELECT {', '.join(quote(f.column) for f in fields)} "
        f"FROM {quote(Case._meta.db_table)} "
        f"WHERE {quote(Case._meta.get_field('case_id').column)} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [case_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = {f.attname: value for f, value in zip(fields, row, strict=True)}
    for name in ("downloaded", "has_label"):  # SQLite returns 0/1
        values[name] = bool(values[name])
    values["error"] = values["error"] or ""
    return Case.from_db(alias, [f.attname for f in fields], [values[f.attname] for f in fields])


def _case_files(root, case: Case) -> tuple[Path, Path | None]:
    """The case's image and label resolved inside ``root`` (PathOutsideRoot if outside it),
    remembered for :data:`_PATHS_TTL_S`."""
    label_path = case.label_path if case.has_label else None
    key = (str(root), case.image_path, label_path)
    now = time.monotonic()
    with _paths_lock:
        hit = _paths.get(key)
    if hit is not None and now - hit[0] < _PATHS_TTL_S:
        return hit[1], hit[2]
    image = resolve_inside(root, case.image_path)
    labels = resolve_inside(root, label_path) if label_path is not None else None
    with _paths_lock:
        _paths[key] = (now, image, labels)
        _paths.move_to_end(key)
        while len(_paths) > _PATHS_MAX:
            _paths.popitem(last=False)
    return image, labels


def require_dataset_access(user) -> None:
    """The dataset-visibility rule for tile resolvers (plain views, not DRF): raises
    Unavailable(403, :attr:`DatasetAccess.message`) when ``user`` may not see the dataset."""
    if not dataset_visible_to(user):
        raise Unavailable(403, DatasetAccess.message)


def case_volumes(case_id: str, user) -> tuple[Case, VolumeSet]:
    require_dataset_access(user)
    case = _case_row(case_id)
    if case is None:
        raise Unavailable(404, f"no case {case_id!r} in the catalog")
    if not case.downloaded:
        raise Unavailable(
            404, f"case {case_id} is not downloaded: its image is not in the data root"
        )
    if case.error:
        raise Unavailable(409, f"case {case_id} could not be ingested: {case.error}")
    try:
        image, labels = _case_files(settings.CTSPINE_DATA_ROOT, case)
    except PathOutsideRoot as exc:
        raise Unavailable(409, str(exc)) from None
    if not image.exists():
        raise Unavailable(404, f"case {case_id} is not downloaded: {case.image_path} is missing")
    return case, VolumeSet(image=image, labels=labels, public=settings.CTSPINE_PUBLIC_DATASET)


def resolve_case(request, *, case_id: str) -> tuple[Case, VolumeSet]:
    """The tile endpoints' resolver for dataset cases."""
    return case_volumes(case_id, request.user)


def case_centroids(case: Case, volumes: VolumeSet) -> dict[int, tuple]:
    """Vertebra centroids (RAS mm) from the catalog's label statistics."""
    return {v.label: (v.centroid_x, v.centroid_y, v.centroid_z) for v in case.vertebrae.all()}


def _case_file(request, case, volumes, which: str):
    if which not in ("image", "label"):
        return error_response(404, "files are 'image' or 'label'")
    path = volumes.image if which == "image" else volumes.labels
    if path is None:
        return error_response(404, f"case {case.case_id} has no label file")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)


case_file = resolved(resolve_case, _case_file, keys=("case_id",))
