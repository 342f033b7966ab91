"""One segmentation from file to files: read the CT, predict, write the labels, compare with the
ground truth. Pure Python, no Django: a task calls it with paths and a loaded predictor, a
benchmark calls it the same way.

Arrays are handled in RAS+ order (``ctspine.imaging.volume_io``), except the network's input and
output, which are in the voxel order the model's nnU-Net reader would give it (the file's stored
order for SimpleITKIO/NibabelIO models, RAS+ for NibabelIOWithReorient ones); the prediction is
written back in the image file's own stored orientation, so it overlays the uploaded file voxel
for voxel in any tool. Distances are in mm, centroids in RAS+ world mm, timings in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ctspine.imaging.label_stats import summarize_labels
from ctspine.imaging.volume_io import (
    Volume,
    check_same_grid,
    from_stored_order,
    read_volume,
    stored_affine,
    stored_spacing,
    to_stored_order,
    write_nifti,
)
from ctspine.metrics import compare_labels

PREDICTION_FILE = "prediction.nii.gz"
# Share of the progress bar per stage; the network pass dominates on real scans.
_READ_DONE, _PREDICT_DONE, _WRITE_DONE = 0.05, 0.85, 0.9


class Cancelled(Exception):
    """The job was cancelled (or taken away from this worker) between two steps."""


class Predictor(Protocol):
    """What :func:`segment` needs of a model: :class:`inference.predictor.VertebraPredictor`.

    ``sees_stored_orientation``: the model was trained on files read as stored (nnU-Net's
    SimpleITKIO and NibabelIO), so it is given each scan in its file's voxel order, as nnU-Net
    itself would; otherwise (NibabelIOWithReorient) in RAS+ order.
    """

    sees_stored_orientation: bool

    def predict_result(self, *, image, spacing_mm, progress=None): ...


@dataclass(frozen=True)
class SegmentationOutcome:
    """Result of :func:`segment`. ``centroids`` maps "prediction"/"reference" to label value ->
    {"mm": RAS+ world position, "voxel": RAS+ voxel index}; ``comparison`` is
    ``ctspine.metrics.Comparison.to_dict()`` (None without ground truth)."""

    prediction_path: Path
    labels_present: tuple[int, ...]
    centroids: dict[str, dict[int, dict]]
    comparison: dict | None
    device: str
    tiles: int
    timings: dict[str, float] = field(default_factory=dict)


def segment(
    *,
    predictor: Predictor,
    image_path: Path,
    output_dir: Path,
    reference_path: Path | None = None,
    progress: Callable[[float, str], None] = lambda fraction, stage: None,
    check_cancel: Callable[[], None] = lambda: None,
    read: Callable[..., Volume] = read_volume,
) -> SegmentationOutcome:
    """Segment the CT at ``image_path`` into ``output_dir/prediction.nii.gz`` (written atomically).

    ``reference_path``: ground truth on the image grid; when given, the per-vertebra comparison
    is computed. ``progress(fraction, stage)`` is called as work advances; ``check_cancel()`` is
    called between steps and on every progress report of the network pass, and stops the work
    by raising (e.g. :class:`Cancelled`). ``read(path, kind=...)`` reads the image and the
    ground truth as :func:`ctspine.imaging.volume_io.read_volume` does (a worker passes the
    volume cache's, so that the result page opens warm).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    progress(0.0, "reading image")
    image = read(image_path, kind="image")
    timings["read_s"] = time.perf_counter() - started
    check_cancel()

    def network_progress(fraction: float) -> None:
        check_cancel()
        progress(_READ_DONE + (_PREDICT_DONE - _READ_DONE) * fraction, "predicting")

    progress(_READ_DONE, "predicting")
    if predictor.sees_stored_orientation:
        result = predictor.predict_result(
            image=to_stored_order(image.data, like=image),
            spacing_mm=stored_spacing(image),
            progress=network_progress,
        )
        labels = from_stored_order(result.labels, like=image)
    else:
        result = predictor.predict_result(
            image=image.data, spacing_mm=image.spacing, progress=network_progress
        )
        labels = result.labels
    timings.update(
        predict_s=result.timings.total_s,
        preprocess_s=result.timings.preprocess_s,
        network_s=result.timings.network_s,
        export_s=result.timings.export_s,
    )
    check_cancel()

    progress(_PREDICT_DONE, "writing result")
    mark = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    prediction_path = output_dir / PREDICTION_FILE
    write_labels(labels=labels, like=image, path=prediction_path)
    summary = summarize_labels(labels, image.affine)
    centroids = {"prediction": _centroids(summary, image)}
    timings["write_s"] = time.perf_counter() - mark
    check_cancel()

    comparison = None
    if reference_path is not None:
        progress(_WRITE_DONE, "comparing with ground truth")
        mark = time.perf_counter()
        reference = read(reference_path, kind="label")
        check_same_grid(
            image_shape=image.data.shape,
            image_affine=image.affine,
            label_shape=reference.data.shape,
            label_affine=reference.affine,
        )
        comparison = compare_labels(
            reference=reference.data, prediction=labels, spacing_mm=image.spacing
        ).to_dict()
        centroids["reference"] = _centroids(summarize_labels(reference.data, image.affine), image)
        timings["metrics_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    progress(1.0, "done")
    return SegmentationOutcome(
        prediction_path=prediction_path,
        labels_present=tuple(summary.values),
        centroids=centroids,
        comparison=comparison,
        device=result.device,
        tiles=result.tiles,
        timings=timings,
    )


def _centroids(summary, image: Volume) -> dict[int, dict]:
    inverse = np.linalg.inv(image.affine)
    found = {}
    for vertebra in summary.vertebrae:
        voxel = (inverse @ [*vertebra.centroid_mm, 1.0])[:3]
        voxel = [
            int(min(max(round(v), 0), n - 1)) for v, n in zip(voxel, image.data.shape, strict=True)
        ]
        found[vertebra.label] = {
            "mm": [round(float(c), 2) for c in vertebra.centroid_mm],
            "voxel": voxel,
        }
    return found


def write_labels(*, labels: np.ndarray, like: Volume, path: Path) -> None:
    """Write RAS+ ``labels`` (uint8, on ``like``'s grid) as NIfTI in ``like``'s stored orientation.

    Written atomically (:func:`ctspine.imaging.volume_io.write_nifti`): readers see the old file
    or the new one, never half of one.
    """
    data = to_stored_order(np.asarray(labels, dtype=np.uint8), like=like)
    affine = stored_affine(like)
    if data.shape != tuple(like.original_shape):
        raise RuntimeError(f"reoriented labels {data.shape} != stored {like.original_shape}")
    write_nifti(path, data, affine, description=b"CTSpine1K labels 0-25 (nnU-Net)")
