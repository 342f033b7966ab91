"""Evaluating one prediction file against its ground truth (no ORM, no settings).

This is the worker function of ``evaluation.evaluate``: it runs in a process pool, takes a small
picklable :class:`PairTask` of paths and returns a picklable :class:`PairResult` of plain values.
Both volumes are read as RAS+ label maps (``ctspine.imaging.volume_io``), so a prediction stored
in another orientation but on the same world grid compares correctly; a prediction on another
grid (shape, or voxel positions more than 1e-3 mm apart) is a "grid mismatch", not an error of
the run. Metrics and their conventions are those of ``ctspine.metrics.compare_labels``.

Labels a ground truth sets aside (VerSe's T13 and sacrum: ``evaluation.reference_sets``) are
an ignore region: background in the ground truth and in the prediction alike, so that neither
Dice nor the surface distances score a prediction there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from django.db import models

from ctspine.imaging.volume_io import VolumeError, check_same_grid, read_volume
from ctspine.metrics import LabelMetrics, compare_labels
from ctspine.volume_cache import CacheLocation, VolumeCache
from evaluation.reference_sets import Reference, read_reference


class CaseStatus(models.TextChoices):
    """How one case of an evaluation ended (``evaluation.models.CaseResult.status``)."""

    OK = "ok", "evaluated"
    MISSING = "missing", "no prediction"
    GRID_MISMATCH = "grid_mismatch", "grid mismatch"
    UNREADABLE = "unreadable", "unreadable"


OK, MISSING, GRID_MISMATCH, UNREADABLE = CaseStatus


_caches: dict[CacheLocation, VolumeCache] = {}


def _reader(cache: CacheLocation | None):
    """How to read ground truth: through the volume cache at ``cache`` (so an evaluated split is
    warm in the viewer afterwards), or from the file when None."""
    if cache is None:
        return read_volume
    if cache not in _caches:
        # Written before returning: a pool process may be ended as soon as its last task returns.
        _caches[cache] = VolumeCache(cache.root, cache.max_bytes, write_behind=False)
    return _caches[cache].read_volume


@dataclass(frozen=True)
class PairTask:
    """One case to evaluate: absolute paths of the ground truth and the prediction label maps
    (prediction None: there is none, score an empty prediction); ``tolerance_mm`` is the NSD
    tolerance in mm; ``convention``: the ground truth's labels (``evaluation.reference_sets``);
    ``cache``: the volume cache to read ground truth through (None: the files)."""

    case_id: str
    reference: str
    prediction: str | None
    tolerance_mm: float = 2.0
    convention: str = "ctspine"
    cache: CacheLocation | None = None


@dataclass(frozen=True)
class PairResult:
    """What one case gave. ``status`` is ``ok``, ``grid_mismatch`` or ``unreadable`` (then
    ``error`` says why and there are no metrics). ``mean_*`` are the case's "Mean of Vertebrae"
    (Dice/NSD over the labels counted, distances over those where defined), ``spine_*`` the
    binary whole spine; ``level_errors`` and ``callouts`` are sentences ready to show (per
    vertebra; callouts also say what the ground truth set aside), ``level_summary`` the level
    errors in a few phrases for the case; ``set_aside``: (name, voxels) of each label the
    ground truth set aside, such as ("T13", 5120), whatever the status once the ground truth
    was read; a case without prediction has status ``missing`` and the metrics of an empty
    prediction; ``seconds`` is the wall time of reading and comparing."""

    case_id: str
    status: str
    error: str = ""
    labels: tuple[LabelMetrics, ...] = ()
    mean_dice: float | None = None
    mean_hd95_mm: float | None = None
    mean_assd_mm: float | None = None
    mean_nsd: float | None = None
    spine_dice: float | None = None
    spine_hd95_mm: float | None = None
    level_errors: tuple[str, ...] = ()
    off_by_one: int = 0
    callouts: tuple[str, ...] = ()
    level_summary: tuple[str, ...] = ()
    set_aside: tuple[tuple[str, int], ...] = ()
    shape: tuple[int, ...] = ()
    spacing_mm: tuple[float, ...] = ()
    seconds: float = 0.0


def evaluate_pair(task: PairTask) -> PairResult:
    """Read both label maps, check they share a grid, compare them. Never raises for a bad file:
    the result's ``status`` and ``error`` say what was wrong."""
    start = time.perf_counter()
    try:
        truth = read_reference(task.reference, convention=task.convention, read=_reader(task.cache))
    except VolumeError as exc:
        return PairResult(task.case_id, UNREADABLE, f"ground truth: {exc}")
    reference = truth.volume
    set_aside = tuple((found.name, found.voxels) for found in truth.set_aside)
    if task.prediction is None:
        return _compare(task, truth, np.zeros_like(reference.data), start)
    try:
        prediction = read_volume(task.prediction, kind="label")
    except VolumeError as exc:
        return PairResult(task.case_id, UNREADABLE, f"prediction: {exc}", set_aside=set_aside)
    try:
        check_same_grid(
            image_shape=reference.data.shape,
            image_affine=reference.affine,
            label_shape=prediction.data.shape,
            label_affine=prediction.affine,
        )
    except VolumeError as exc:
        # check_same_grid speaks of "label" and "image"; here they are prediction and truth.
        message = str(exc).replace("label", "prediction").replace("image", "ground truth")
        return PairResult(task.case_id, GRID_MISMATCH, message, set_aside=set_aside)
    return _compare(task, truth, prediction.data, start)


def _compare(task: PairTask, truth: Reference, prediction, start: float) -> PairResult:
    reference = truth.volume
    comparison = compare_labels(
        reference=reference.data,
        # The set-aside voxels are background in the ground truth; made background in the
        # prediction too, a vertebra predicted over them is neither a false positive (Dice)
        # nor a surface there (HD95, ASSD, NSD). The cut leaves the prediction a face on the
        # region's border; that is where a ground-truth vertebra next to the region ends too,
        # so a prediction that follows the truth up to the set-aside vertebra scores as if
        # the region were not there, and one that strays beyond the truth elsewhere is still
        # measured by its voxels outside the region. (Dropping only the surface points inside
        # the region would keep the set-aside voxels as false positives of the Dice.)
        prediction=truth.without_ignored(prediction),
        spacing_mm=reference.spacing,
        tolerance_mm=task.tolerance_mm,
    )
    rows = tuple(comparison.per_label)
    mean, spine = comparison.mean_of_vertebrae, comparison.spine
    missing = task.prediction is None
    return PairResult(
        case_id=task.case_id,
        status=MISSING if missing else OK,
        error="no prediction file: scored as an empty prediction" if missing else "",
        labels=rows,
        mean_dice=mean.dice,
        mean_hd95_mm=mean.hd95_mm,
        mean_assd_mm=mean.assd_mm,
        mean_nsd=mean.nsd,
        spine_dice=spine.dice if spine else None,
        spine_hd95_mm=spine.hd95_mm if spine else None,
        level_errors=tuple(error.message for error in comparison.level_errors),
        off_by_one=sum(row.off_by_one for row in rows),
        callouts=(*comparison.counts.callouts, *(found.note for found in truth.set_aside)),
        level_summary=tuple(comparison.level_summary),
        set_aside=tuple((found.name, found.voxels) for found in truth.set_aside),
        shape=tuple(int(n) for n in reference.data.shape),
        spacing_mm=tuple(float(s) for s in reference.spacing),
        seconds=time.perf_counter() - start,
    )
