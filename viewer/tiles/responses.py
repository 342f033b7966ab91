"""Tile, projection, volume and voxel responses for any VolumeSet (a dataset case, or an upload
with its prediction). Views resolve what to show and call one function here."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.http import quote_etag

from ctspine.atomic import atomic_write
from ctspine.imaging import display
from ctspine.imaging.projection import Slab, project, project_with_labels, slab_range
from ctspine.imaging.render import render_tile
from ctspine.imaging.thumbnail import render_thumbnail
from ctspine.imaging.volume_io import VolumeError, check_same_grid
from ctspine.labels import LABEL_BY_VALUE, WINDOW_PRESETS
from ctspine.volume_store import StoreError
from viewer.tiles.params import (
    DISPLAY_PARAMETERS,
    PROJECTION_PARAMETERS,
    ParameterError,
    check_known,
    parse_display,
    parse_plane,
    parse_projection,
)
from viewer.tiles.volumes import VolumeSet, volume_cache

RENDER_VERSION = "2"  # bump when the rendering of the same parameters changes
IMMUTABLE = "max-age=31536000, immutable"


def error_response(status: int, message: str, parameter: str | None = None) -> JsonResponse:
    body = {"error": message}
    if parameter:
        body["parameter"] = parameter
    return JsonResponse(body, status=status)


def _etag(volumes: VolumeSet, version: str, *parts: str) -> str:
    text = "|".join((RENDER_VERSION, version, *parts))
    return quote_etag(hashlib.sha1(text.encode()).hexdigest()[:32])


def _cache_control(request, volumes: VolumeSet, version: str) -> str:
    scope = "public" if volumes.public else "private"
    # A URL carrying the current file version never changes content; any other URL may change
    # when the file does, so it is revalidated (cheaply: ETag, 304).
    if request.GET.get("v") == version:
        return f"{scope}, {IMMUTABLE}"
    return f"{scope}, no-cache"


def _not_modified(request, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    return etag in [tag.strip() for tag in header.split(",")] or header.strip() == "*"


def _conditional(request, volumes: VolumeSet, version: str, key: str, render) -> HttpResponse:
    etag = _etag(volumes, version, request.path, key)
    cache_control = _cache_control(request, volumes, version)
    if _not_modified(request, etag):
        response = HttpResponse(status=304)
    else:
        response = render()
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response


def _load(volumes: VolumeSet, options):
    """Image and the label maps the options need, grid-checked against the image."""
    wanted = {"image": (volumes.image, "image")}
    if options is None or options.overlay:
        layer = options.layer if options else "labels"
        if volumes.labels is not None and layer in ("labels", "compare"):
            wanted["labels"] = (volumes.labels, "label")
        if volumes.reference is not None and layer in ("reference", "compare"):
            wanted["reference"] = (volumes.reference, "label")
    # Uncached volumes decode in parallel: the first tile waits for the slowest, not the sum.
    found = dict(zip(wanted, volume_cache().get_many(list(wanted.values())), strict=True))
    image, labels, reference = found["image"], found.get("labels"), found.get("reference")
    for other in (labels, reference):
        if other is not None:
            check_same_grid(
                image_shape=image.shape,
                image_affine=image.affine,
                label_shape=other.shape,
                label_affine=other.affine,
            )
    return image, labels, reference


def _image_response(encoded, spacing: display.PixelSpacing, extra: dict | None = None):
    response = HttpResponse(encoded.data, content_type=encoded.media_type)
    response["X-Pixel-Spacing"] = f"{spacing.col_mm:.6g},{spacing.row_mm:.6g}"
    response["X-Tile-Size"] = f"{encoded.width},{encoded.height}"
    for name, value in (extra or {}).items():
        response[name] = value
    return response


def _guard(handler):
    """Turn known failures into 400 (bad parameter) or 422 (unreadable volume) with a message.

    A cache store found damaged while it is read (changed on disk since this process opened it)
    is dropped and the request answered again, once, from a fresh conversion of the source; only
    a second failure is reported."""

    def wrapped(*args, **kwargs):
        for attempt in (1, 2):
            try:
                return handler(*args, **kwargs)
            except ParameterError as exc:
                return error_response(400, str(exc), exc.name)
            except StoreError as exc:
                if attempt == 1 and volume_cache().discard_damaged(exc):
                    continue
                return error_response(422, f"this volume cannot be displayed: {exc}")
            except VolumeError as exc:
                return error_response(422, f"this volume cannot be displayed: {exc}")

    return wrapped


@_guard
def slice_response(request, volumes: VolumeSet, *, plane: str, index: int, ext: str):
    """One slice of ``plane`` (display convention of ctspine.imaging.display) as an image."""
    check_known(request.GET, DISPLAY_PARAMETERS)
    plane = parse_plane(plane)
    options = parse_display(request.GET, ext=ext, layers=volumes.layers)
    version = volumes.version()

    def render():
        image, labels, reference = _load(volumes, options)
        try:
            display.check_index(image.shape, plane=plane, index=index)
        except ValueError as exc:
            raise ParameterError("index", str(exc)) from None
        encoded = render_tile(
            values=image.tile(plane=plane, index=index),
            labels=None if labels is None else labels.tile(plane=plane, index=index),
            reference=None if reference is None else reference.tile(plane=plane, index=index),
            options=options,
        )
        return _image_response(encoded, image.pixel_spacing(plane=plane))

    return _conditional(request, volumes, version, options.cache_key(), render)


@_guard
def projection_response(request, volumes: VolumeSet, *, plane: str, ext: str):
    """A MIP / MinIP / mean projection along ``plane``'s normal: the whole volume (cached after
    the first computation) or a slab of ``slab_mm`` around slice ``center``."""
    check_known(request.GET, DISPLAY_PARAMETERS | PROJECTION_PARAMETERS)
    plane = parse_plane(plane)
    options = parse_display(request.GET, ext=ext, layers=volumes.layers)
    wanted = parse_projection(request.GET)
    version = volumes.version()

    def render():
        cache = volume_cache()
        image, labels, reference = _load(volumes, options)
        slab = _slab(image, plane, wanted)
        if slab is None and labels is not None and options.layer != "compare":
            result = cache.label_projection(image, labels, plane=plane, mode=wanted.mode)
            values, label_tile, reference_tile = result.tile, result.labels, None
            slab = result.slab
        else:
            label_tile = reference_tile = None
            if labels is not None:
                result = project_with_labels(
                    image.data, labels.data, plane=plane, mode=wanted.mode, slab=slab
                )
                values, label_tile = result.tile, result.labels
            elif slab is None:
                values = cache.projection(image, plane=plane, mode=wanted.mode)
            else:
                values = project(image.data, plane=plane, mode=wanted.mode, slab=slab)
            if reference is not None:
                reference_tile = project_with_labels(
                    image.data, reference.data, plane=plane, mode=wanted.mode, slab=slab
                ).labels
            slab = slab or Slab(start=0, stop=image.slice_count(plane=plane))
        encoded = render_tile(
            values=values, labels=label_tile, reference=reference_tile, options=options
        )
        return _image_response(
            encoded, image.pixel_spacing(plane=plane), {"X-Slab": f"{slab.start},{slab.stop}"}
        )

    return _conditional(request, volumes, version, options.cache_key() + wanted.cache_key(), render)


def _slab(image, plane: str, wanted) -> Slab | None:
    if wanted.center is None:
        return None
    count = image.slice_count(plane=plane)
    spacing = image.spacing[display.NORMAL_AXIS[plane]]
    try:
        return slab_range(
            count=count, spacing_mm=spacing, center=wanted.center, thickness_mm=wanted.slab_mm
        )
    except ValueError as exc:
        raise ParameterError("center", str(exc)) from None


@_guard
def thumbnail_response(request, volumes: VolumeSet, *, ext: str):
    """A small coronal bone MIP with the labels, stored under the cache dir after the first
    request (or made ahead by ``warm_cache``)."""
    check_known(request.GET, {"v"})
    options = parse_display({}, ext=ext)
    version = volumes.version()

    def render():
        data = thumbnail_bytes(volumes, fmt=options.fmt, version=version)
        return HttpResponse(data, content_type=f"image/{options.fmt}")

    return _conditional(request, volumes, version, f"thumbnail-{options.fmt}", render)


def thumbnail_path(version: str, fmt: str) -> Path:
    return Path(settings.CTSPINE_CACHE_DIR) / "thumbnails" / f"{version}.{fmt}"


def thumbnail_bytes(volumes: VolumeSet, *, fmt: str = "png", version: str | None = None) -> bytes:
    path = thumbnail_path(version or volumes.version(), fmt)
    if path.exists():
        return path.read_bytes()
    cache = volume_cache()
    image, labels, _ = _load(volumes, None)
    if labels is not None:
        result = cache.label_projection(image, labels, plane="coronal", mode="mip")
        tile, label_tile = result.tile, result.labels
    else:
        tile, label_tile = cache.projection(image, plane="coronal", mode="mip"), None
    encoded = render_thumbnail(
        tile=tile, labels=label_tile, spacing=image.pixel_spacing(plane="coronal"), fmt=fmt
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, encoded.data)
    return encoded.data


@_guard
def volume_response(request, volumes: VolumeSet, *, centroids_mm: dict[int, tuple] | None = None):
    """Geometry for the viewer: per plane the slice count, tile size and pixel spacing (mm), the
    spacing (mm, RAS), intensity range (HU), labels present with colours, and each vertebra's
    centroid as a voxel and as tile positions (for the legend's jump)."""
    check_known(request.GET, {"v"})
    image, labels, _ = _load(volumes, None)
    shape = image.shape
    planes = {}
    for plane in display.PLANES:
        rows, cols = display.tile_shape(shape, plane=plane)
        spacing = image.pixel_spacing(plane=plane)
        planes[plane] = {
            "slices": image.slice_count(plane=plane),
            "tile": {"cols": cols, "rows": rows},
            "pixel_spacing_mm": [spacing.col_mm, spacing.row_mm],
        }
    inverse = np.linalg.inv(image.affine)
    vertebrae = []
    for value, centroid in sorted((centroids_mm or {}).items()):
        voxel = [int(round(c)) for c in (inverse @ [*centroid, 1.0])[:3]]
        voxel = [min(max(v, 0), n - 1) for v, n in zip(voxel, shape, strict=True)]
        positions = display.voxel_to_tiles(shape=shape, voxel=tuple(voxel))
        vertebrae.append(
            {
                "value": value,
                "name": LABEL_BY_VALUE[value].name,
                "colour": LABEL_BY_VALUE[value].colour,
                "region": LABEL_BY_VALUE[value].region,
                "centroid_mm": list(centroid),
                "voxel": voxel,
                "positions": {
                    p: {"index": t.index, "col": t.col, "row": t.row} for p, t in positions.items()
                },
            }
        )
    body = {
        "version": volumes.version(),
        "shape": list(shape),
        "spacing_mm": list(image.spacing),
        "orientation": "RAS",
        "stored_orientation": image.original_axcodes,
        "planes": planes,
        "intensity_range": list(image.intensity_range),
        "has_labels": volumes.labels is not None,
        "layers": list(volumes.layers),
        "vertebrae": vertebrae,
        "windows": [asdict(preset) for preset in WINDOW_PRESETS.values()],
    }
    response = JsonResponse(body, json_dumps_params={"separators": (",", ":")})
    response["Cache-Control"] = "private, no-cache"
    return response


@_guard
def voxel_response(request, volumes: VolumeSet):
    """HU and label under tile pixel (``x`` = column, ``y`` = row) of ``plane`` slice ``index``."""
    check_known(request.GET, {"plane", "index", "x", "y"})
    plane = parse_plane(request.GET.get("plane", ""))
    values = {}
    for name in ("index", "x", "y"):
        raw = request.GET.get(name)
        try:
            values[name] = int(raw)
        except (TypeError, ValueError):
            raise ParameterError(name, f"{raw!r} is not an integer") from None
    cache = volume_cache()
    image = cache.get(volumes.image, kind="image")
    try:
        voxel = display.tile_to_voxel(
            shape=image.shape, plane=plane, index=values["index"], col=values["x"], row=values["y"]
        )
    except ValueError as exc:
        name = "x" if "pixel" in str(exc) else "index"
        raise ParameterError(name, str(exc)) from None
    body = {
        "voxel": list(voxel),
        "world_mm": [round(c, 3) for c in display.voxel_to_world(affine=image.affine, voxel=voxel)],
        "hu": float(image.voxel(voxel)),
    }
    for layer, path in (("label", volumes.labels), ("reference", volumes.reference)):
        if path is not None:
            value = int(cache.get(path, kind="label").voxel(voxel))
            body[layer] = {"value": value, "name": LABEL_BY_VALUE[value].name if value else None}
    return JsonResponse(body)
