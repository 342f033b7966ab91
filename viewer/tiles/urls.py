"""The tile endpoints of anything the viewer can show, built once.

A dataset case, a segmentation job and an evaluated case differ only in how a request finds its
files: each app gives a ``resolve(request, **prefix_kwargs) -> (subject, VolumeSet)`` (called with
the parameters of its URL prefix, e.g. ``case_id``) that raises
:class:`Unavailable` with the status and message to answer, and gets the same slice, projection,
volume and voxel endpoints (same parameters, same caching headers) from :func:`tile_urlpatterns`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.urls import path
from django.views.decorators.http import require_GET

from viewer.tiles import converters  # noqa: F401  (registers <ext:...>)
from viewer.tiles.responses import (
    error_response,
    projection_response,
    slice_response,
    thumbnail_response,
    volume_response,
    voxel_response,
)
from viewer.tiles.volumes import VolumeSet

Resolver = Callable[..., tuple[object, VolumeSet]]
Centroids = Callable[[object, VolumeSet], dict[int, tuple]]


class Unavailable(Exception):
    """What a resolver raises when the request cannot be served: HTTP ``status`` and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def resolved(resolve: Resolver, handler, *, keys: tuple[str, ...]):
    """A GET view that resolves the request's subject and files from the URL kwargs ``keys``,
    then calls ``handler(request, subject, volumes, **the other url kwargs)``."""

    @require_GET
    def view(request, **kwargs):
        try:
            subject, volumes = resolve(request, **{k: kwargs.pop(k) for k in keys})
        except Unavailable as exc:
            return error_response(exc.status, str(exc))
        return handler(request, subject, volumes, **kwargs)

    return view


def tile_urlpatterns(
    prefix: str,
    *,
    resolve: Resolver,
    name: str,
    centroids: Centroids | None = None,
    thumbnail: bool = False,
) -> list:
    """``<prefix>slices/<plane>/<index>.<ext>``, ``projections/<plane>.<ext>``, ``volume/``,
    ``voxel/`` (and ``thumbnail.<ext>``), named ``<name>-slice`` etc. ``centroids(subject,
    volumes)`` gives the vertebra centroids (RAS mm) the viewer's legend jumps to."""

    def slice_view(request, subject, volumes, plane, index, ext):
        return slice_response(request, volumes, plane=plane, index=index, ext=ext)

    def projection_view(request, subject, volumes, plane, ext):
        return projection_response(request, volumes, plane=plane, ext=ext)

    def volume_view(request, subject, volumes):
        found = centroids(subject, volumes) if centroids else {}
        return volume_response(request, volumes, centroids_mm=found)

    def voxel_view(request, subject, volumes):
        return voxel_response(request, volumes)

    def thumbnail_view(request, subject, volumes, ext):
        return thumbnail_response(request, volumes, ext=ext)

    keys = tuple(re.findall(r"<(?:\w+:)?(\w+)>", prefix))  # what identifies the subject

    def view(handler):
        return resolved(resolve, handler, keys=keys)

    patterns = [
        path(
            f"{prefix}slices/<str:plane>/<int:index>.<ext:ext>",
            view(slice_view),
            name=f"{name}-slice",
        ),
        path(
            f"{prefix}projections/<str:plane>.<ext:ext>",
            view(projection_view),
            name=f"{name}-projection",
        ),
        path(f"{prefix}volume/", view(volume_view), name=f"{name}-volume"),
        path(f"{prefix}voxel/", view(voxel_view), name=f"{name}-voxel"),
    ]
    if thumbnail:
        patterns.append(
            path(
                f"{prefix}thumbnail.<ext:ext>",
                view(thumbnail_view),
                name=f"{name}-thumbnail",
            )
        )
    return patterns
