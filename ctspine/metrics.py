"""Segmentation metrics per vertebra: Dice, HD95, ASSD and NSD, plus level (labelling) errors.

Pure numpy + scipy, no Django: called by the comparison views and by workers alike.

Inputs
------
Two integer label volumes of the same shape (reference = ground truth, prediction), values 0-25
(0 background, 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6). Any consistent orientation works; the
voxel spacing is given in mm **in array axis order** (``spacing_mm[i]`` is the size of a voxel
along axis ``i``), so anisotropic voxels are measured correctly. All distances are in mm.

Definitions (they follow ``medpy.metric.binary``, which the CTSpine1K evaluation script uses)
-------------------------------------------------------------------------------------------
- **Dice** = 2 |R ∩ P| / (|R| + |P|), voxel counts (identical to ``medpy.metric.binary.dc``).
- **Surface** of a mask = the mask voxels removed by one binary erosion with the face-connected
  (6-neighbour) structuring element, voxels outside the volume counting as background (medpy's
  ``mask ^ binary_erosion(mask)``, ``border_value=0``).
- **Surface distances**: for every surface voxel of one mask, the Euclidean distance in mm (voxel
  centres, spacing respected) to the nearest surface voxel of the other mask. This is exactly
  what medpy gets from ``distance_transform_edt(~surface, sampling=spacing)``; here it is
  computed with a k-d tree over the surface voxels of each label's bounding box, which gives the
  same distances far faster than a distance transform of the volume.
- **HD95** = the 95th percentile (numpy's default linear interpolation) of the **pooled**
  distances of both directions (prediction->reference and reference->prediction concatenated),
  medpy's ``hd95``. MONAI and DeepMind's surface-distance instead take the larger of the two
  directed 95th percentiles; on ragged predictions the two definitions differ by millimetres.
- **ASSD** = the mean of the pooled surface distances of both directions, i.e. (sum of
  prediction->reference distances + sum of reference->prediction distances) / (number of
  surface voxels of both): ``medpy.metric.binary.assd`` since medpy 0.5 (loli/medpy#108) and the
  usual definition in the literature (Heimann et al. 2009). medpy 0.4 averaged the two directed
  means instead, which differs when the two surfaces have different sizes.
- **NSD** (normalised surface Dice) at tolerance τ mm = (number of prediction surface voxels
  within τ of the reference surface + number of reference surface voxels within τ of the
  prediction surface) / (total number of surface voxels of both). This is DeepMind's
  surface-distance "surface Dice at tolerance" with every surface voxel weighted 1 instead of
  by its surfel area. Default τ = 2 mm. A distance counts as within τ up to a relative
  1e-6 above it: a spacing read from a float32 affine (1.0000000224 mm for 1 mm) must not
  push distances that are whole multiples of the spacing, such as exactly 2 voxels, past τ.

Conventions
-----------
- A label in neither reference nor prediction is not counted: it is absent from the results.
- A label in only one of them has Dice 0 and NSD 0; its distances (HD95, ASSD) are not defined
  (``None``) and are left out of distance means.
- "Mean of Vertebrae" = the mean Dice (and NSD) over the labels counted in this case, and the mean
  HD95 (and ASSD) over those labels where it is defined. "Mean of Spine" = the metrics of the
  binary whole spine (all labels > 0 merged), as in the CTSpine1K paper.
- Level errors are reported apart from boundary errors. For each reference vertebra, the
  predicted label "mostly covering" it is the predicted vertebra label (background excluded) with
  the most voxels inside it; the vertebra is "off by one level" when that label is a neighbouring
  level (label ± 1) rather than its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ctspine.labels import MAX_LABEL, label_name

__all__ = [
    "CONVENTIONS",
    "Comparison",
    "LabelMetrics",
    "LevelError",
    "MeanMetrics",
    "Overlap",
    "VertebraConfusion",
    "VertebraCounts",
    "assd",
    "compare_labels",
    "dice",
    "hd95",
    "nsd",
]

# The conventions above as short sentences, for pages that explain the numbers.
CONVENTIONS: tuple[str, ...] = (
    "Distances are in millimetres between voxel centres, with the scan's voxel spacing.",
    "Surface = the voxels of a mask removed by one 6-connected binary erosion.",
    "HD95 = 95th percentile of the surface distances of both directions pooled "
    "(medpy's definition, used by the CTSpine1K evaluation script).",
    "ASSD = mean of the surface distances of both directions pooled.",
    "NSD = share of the surface voxels of both masks within the tolerance of the other surface.",
    "A vertebra in neither reference nor prediction is not counted.",
    "A vertebra in only one of them has Dice 0 and NSD 0; its distances are not defined and "
    "are left out of distance means.",
    "Mean of Vertebrae = mean over the vertebrae counted; Mean of Spine = all vertebrae merged "
    "into one binary mask.",
)

_NUM_VALUES = MAX_LABEL + 1  # label values 0..25
# NSD: distances up to tolerance * this count as within it (float32 spacing noise, see above).
_TOLERANCE_SLACK = 1.0 + 1e-6
# Voxels per slab of the joint histogram, so its int64 codes never need a volume-sized copy.
_HISTOGRAM_SLAB_VOXELS = 1 << 22


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label (1-25), of the whole spine (label 0, "spine") or of a binary mask.

    The one per-vertebra result type: the job page, the evaluation tables, the stored rows
    (``evaluation.models.LabelResult`` has these fields), the CSV and the JSON all use it.

    ``dice`` and ``nsd`` are fractions in [0, 1]; ``hd95_mm`` and ``assd_mm`` are in mm, None
    when the label is in only one of the two volumes; ``*_voxels`` are voxel counts.
    ``predicted_as``: the predicted vertebra label covering most of the reference vertebra (None:
    none, or the label is in the prediction only); ``off_by_one``: it is a neighbouring level.
    """

    label: int
    name: str
    dice: float
    hd95_mm: float | None
    assd_mm: float | None
    nsd: float
    ref_voxels: int
    pred_voxels: int
    predicted_as: int | None = None
    off_by_one: bool = False

    @property
    def found(self) -> str:
        """ "both", "missed" (in the reference only) or "extra" (in the prediction only)."""
        if not self.pred_voxels:
            return "missed"
        return "extra" if not self.ref_voxels else "both"

    @property
    def predicted_name(self) -> str | None:
        return None if self.predicted_as is None else label_name(self.predicted_as)

    @classmethod
    def from_dict(cls, values: dict) -> LabelMetrics:
        """From ``asdict()`` output, such as a job's stored comparison; fields added since it
        was stored take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class MeanMetrics:
    """The "Mean of Vertebrae" row. ``dice`` and ``nsd`` average over the ``labels`` labels
    counted; ``hd95_mm`` and ``assd_mm`` (mm) over the ``labels_with_distances`` labels present
    in both volumes. None where there is nothing to average."""

    dice: float | None
    hd95_mm: float | None
    assd_mm: float | None
    nsd: float | None
    labels: int
    labels_with_distances: int


@dataclass(frozen=True)
class Overlap:
    """Predicted ``label`` (0 = background) covers ``voxels`` voxels of a reference vertebra,
    ``fraction`` of it."""

    label: int
    name: str
    voxels: int
    fraction: float


@dataclass(frozen=True)
class VertebraConfusion:
    """One row of the confusion table: which predicted labels cover a reference vertebra.

    ``covered_by``: every predicted label (background included) inside it, most voxels first.
    ``main_label``: the predicted vertebra label (background excluded) with the most voxels
    inside it, None when none. ``off_by_one``: ``main_label`` is ``label`` ± 1.
    """

    label: int
    name: str
    ref_voxels: int
    covered_by: tuple[Overlap, ...]
    main_label: int | None
    off_by_one: bool


@dataclass(frozen=True)
class LevelError:
    """A reference vertebra mostly labelled as another level: ``fraction`` of its voxels carry
    ``predicted_label``. ``message`` is a call-out ready to show, such as
    "T9 mostly labelled T10 (87%): off by one level"."""

    label: int
    name: str
    predicted_label: int
    predicted_name: str
    fraction: float
    off_by_one: bool
    message: str


@dataclass(frozen=True)
class VertebraCounts:
    """Vertebrae (labels present among those compared) in each volume, with call-outs ready to
    show such as "L6 in prediction only" or "L5 missing in prediction"."""

    reference: int
    prediction: int
    reference_labels: tuple[int, ...]
    prediction_labels: tuple[int, ...]
    only_in_reference: tuple[int, ...]
    only_in_prediction: tuple[int, ...]
    callouts: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_labels` measures for one reference/prediction pair.

    ``per_label``: one row per label counted, ascending. ``spine``: the binary whole spine
    ("Mean of Spine"), None when both volumes are empty. ``mean_of_vertebrae``: means over
    ``per_label``. ``confusion``: one row per reference vertebra. ``level_errors``: reference
    vertebrae mostly labelled as another level. ``counts``: vertebra counts and call-outs.
    ``level_summary``: :func:`summarize_levels` of them, a few phrases for the whole case.
    """

    spacing_mm: tuple[float, ...]
    tolerance_mm: float
    per_label: list[LabelMetrics]
    spine: LabelMetrics | None
    mean_of_vertebrae: MeanMetrics
    confusion: list[VertebraConfusion]
    level_errors: list[LevelError]
    counts: VertebraCounts
    level_summary: tuple[str, ...] = ()

    def label(self, value: int) -> LabelMetrics | None:
        """The row of label ``value``, None when that label was not counted."""
        return next((row for row in self.per_label if row.label == value), None)

    def to_dict(self) -> dict:
        """Plain Python values (dicts, lists, tuples, ints, floats, str, None) for ``json.dumps``."""
        return asdict(self)


def compare_labels(
    *,
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing_mm: tuple[float, ...],
    tolerance_mm: float = 2.0,
    labels: Iterable[int] = range(1, MAX_LABEL + 1),
) -> Comparison:
    """Compare a predicted vertebra label volume with the reference, per label and overall.

    ``reference``, ``prediction``: integer arrays of one shape (normally 3-D), values 0-25, in
    any orientation both share. ``spacing_mm``: voxel size in mm along each array axis, in array
    axis order. ``tolerance_mm``: the NSD tolerance in mm. ``labels``: the vertebrae (1-25) to
    report; the whole-spine row always merges every label > 0.

    Raises ValueError for different shapes, non-integer arrays, values outside 0-25, a spacing
    that is not positive, a negative tolerance or labels outside 1-25.
    """
    spacing, box = _check_volumes(reference, prediction, spacing_mm)
    tolerance = _check_tolerance(tolerance_mm)
    wanted = _check_labels(labels)
    if box is None:  # both volumes all background
        ref_crop = pred_crop = np.zeros((1,) * reference.ndim, dtype=np.uint8)
    else:
        # From here on only the box around the foreground of both volumes is read: a few
        # percent of a CT. Outside it both are background, so nothing there changes a result.
        ref_crop, pred_crop = reference[box], prediction[box]
    joint = _joint_histogram(ref_crop, pred_crop)
    ref_counts, pred_counts = joint.sum(axis=1), joint.sum(axis=0)
    ref_boxes = ndimage.find_objects(ref_crop, max_label=MAX_LABEL)
    pred_boxes = ndimage.find_objects(pred_crop, max_label=MAX_LABEL)

    def label_masks(value: int) -> tuple[np.ndarray, np.ndarray]:
        # The label's own box (union of its boxes in both volumes): both masks are empty
        # outside it, so their surfaces, hence all distances, are those of the full volume.
        sub = _union_box(ref_boxes[value - 1], pred_boxes[value - 1])
        return ref_crop[sub] == value, pred_crop[sub] == value

    confusion = _confusion(joint, wanted)
    levels = {row.label: row for row in confusion}
    per_label = [
        _with_level(
            _metrics_row(
                label=value,
                name=label_name(value),
                intersection=int(joint[value, value]),
                n_ref=int(ref_counts[value]),
                n_pred=int(pred_counts[value]),
                masks=lambda value=value: label_masks(value),
                spacing=spacing,
                tolerance=tolerance,
            ),
            levels.get(value),
        )
        for value in wanted
        if ref_counts[value] or pred_counts[value]  # in neither: not counted
    ]
    n_ref, n_pred = int(ref_counts[1:].sum()), int(pred_counts[1:].sum())
    spine = None
    if n_ref or n_pred:
        spine = _metrics_row(
            label=0,
            name="spine",
            intersection=int(joint[1:, 1:].sum()),
            n_ref=n_ref,
            n_pred=n_pred,
            masks=lambda: (ref_crop != 0, pred_crop != 0),
            spacing=spacing,
            tolerance=tolerance,
        )
    counts = _counts(ref_counts, pred_counts, wanted)
    return Comparison(
        spacing_mm=tuple(float(s) for s in spacing),
        tolerance_mm=tolerance,
        per_label=per_label,
        spine=spine,
        mean_of_vertebrae=_mean_of(per_label),
        confusion=confusion,
        level_errors=_level_errors(confusion),
        counts=counts,
        level_summary=summarize_levels(confusion, counts),
    )


def dice(*, reference: np.ndarray, prediction: np.ndarray) -> float | None:
    """Dice of two binary masks (non-zero = foreground), as ``medpy.metric.binary.dc``, except
    that two empty masks give None (nothing to compare) where medpy gives 1."""
    ref, pred = _check_masks(reference, prediction)
    n_ref, n_pred = np.count_nonzero(ref), np.count_nonzero(pred)
    if n_ref == 0 and n_pred == 0:
        return None
    return _dice(int(np.count_nonzero(ref & pred)), int(n_ref), int(n_pred))


def hd95(*, reference: np.ndarray, prediction: np.ndarray, spacing_mm) -> float | None:
    """HD95 in mm of two binary masks, as ``medpy.metric.binary.hd95`` (pooled 95th
    percentile); None when either mask is empty."""
    row = _mask_metrics(reference, prediction, spacing_mm, 0.0)
    return None if row is None else row.hd95_mm


def assd(*, reference: np.ndarray, prediction: np.ndarray, spacing_mm) -> float | None:
    """Average symmetric surface distance in mm of two binary masks, as
    ``medpy.metric.binary.assd`` (medpy >= 0.5); None when either mask is empty."""
    row = _mask_metrics(reference, prediction, spacing_mm, 0.0)
    return None if row is None else row.assd_mm


def nsd(
    *, reference: np.ndarray, prediction: np.ndarray, spacing_mm, tolerance_mm: float = 2.0
) -> float | None:
    """Normalised surface Dice (0-1) of two binary masks at ``tolerance_mm`` mm; 0 when one mask
    is empty, None when both are."""
    row = _mask_metrics(reference, prediction, spacing_mm, tolerance_mm)
    return None if row is None else row.nsd


def _mask_metrics(reference, prediction, spacing_mm, tolerance_mm) -> LabelMetrics | None:
    ref, pred = _check_masks(reference, prediction)
    spacing = _check_spacing(spacing_mm, ref.ndim)
    tolerance = _check_tolerance(tolerance_mm)
    box = _union_box(_nonzero_box(ref), _nonzero_box(pred))
    if box is None:
        return None
    ref, pred = ref[box], pred[box]
    return _metrics_row(
        label=0,
        name="mask",
        intersection=int(np.count_nonzero(ref & pred)),
        n_ref=int(np.count_nonzero(ref)),
        n_pred=int(np.count_nonzero(pred)),
        masks=lambda: (ref, pred),
        spacing=spacing,
        tolerance=tolerance,
    )


def _metrics_row(
    *,
    label: int,
    name: str,
    intersection: int,
    n_ref: int,
    n_pred: int,
    masks: Callable[[], tuple[np.ndarray, np.ndarray]],
    spacing: np.ndarray,
    tolerance: float,
) -> LabelMetrics:
    """One row; ``masks`` builds the (reference, prediction) boolean masks on a common box and
    is only called when both are non-empty (otherwise the distances are not defined)."""
    hd = mean = None
    surface_dice = 0.0
    if n_ref and n_pred:
        hd, mean, surface_dice = _surface_metrics(*masks(), spacing, tolerance)
    return LabelMetrics(
        label=label,
        name=name,
        dice=_dice(intersection, n_ref, n_pred),
        hd95_mm=hd,
        assd_mm=mean,
        nsd=surface_dice,
        ref_voxels=n_ref,
        pred_voxels=n_pred,
    )


def _with_level(row: LabelMetrics, confusion: VertebraConfusion | None) -> LabelMetrics:
    if confusion is None:  # in the prediction only
        return row
    return replace(row, predicted_as=confusion.main_label, off_by_one=confusion.off_by_one)


def _dice(intersection: int, n_ref: int, n_pred: int) -> float:
    # medpy's expression, so that the floats are identical to its dc().
    return 2.0 * intersection / float(n_ref + n_pred)


def _surface_metrics(
    ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    """(HD95 mm, ASSD mm, NSD) of two non-empty boolean masks on a common box.

    Each nearest surface voxel is found with a k-d tree over the other surface, and the distance
    is then recomputed from the integer index difference as ``distance_transform_edt`` does
    (scale each component, square, sum, square root), in medpy's order, so the values are
    medpy's to the last bit. The tree avoids transforming the whole box: the spine's box has
    millions of voxels, its surface a few hundred thousand, and a distance transform of that
    box is several times slower. Voxels on both surfaces are at distance 0 and skip the query.
    """
    ref_surface, pred_surface = _surface(ref_mask), _surface(pred_mask)
    directed = []
    for source, target in ((pred_surface, ref_surface), (ref_surface, pred_surface)):
        # Flags and indices in C order, the order of medpy's ``distances[surface]``.
        off_target = ~target[source]
        target_voxels = _indices(target)
        query = _indices(source)[off_target]
        _, nearest = cKDTree(target_voxels * spacing).query(query * spacing, workers=-1)
        offsets = (target_voxels[nearest] - query) * spacing
        distances = np.zeros(off_target.size)
        distances[off_target] = np.sqrt((offsets * offsets).sum(axis=1))
        directed.append(distances)
    pooled = np.concatenate(directed)
    within = int(np.count_nonzero(pooled <= tolerance * _TOLERANCE_SLACK))
    return float(np.percentile(pooled, 95)), float(pooled.mean()), within / pooled.size


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: the mask minus its erosion by the face-connected cross,
    voxels beyond the array counting as background (medpy's ``mask ^ binary_erosion(mask)``).
    Shifted views of a zero-padded copy do the erosion faster than ``binary_erosion``
    (bench/metrics.py)."""
    padded = np.pad(mask, 1)
    inner = (slice(1, -1),) * mask.ndim
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (slice(0, -2), slice(2, None)):
            interior &= padded[inner[:axis] + (shift,) + inner[axis + 1 :]]
    return mask & ~interior


def _indices(mask: np.ndarray) -> np.ndarray:
    """(n, ndim) indices of the true voxels in C order: ``np.argwhere``, faster."""
    return np.stack(np.unravel_index(np.flatnonzero(mask), mask.shape), axis=1)


def _joint_histogram(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """26 x 26 voxel counts, ``[r, p]`` = voxels labelled r in the reference and p in the
    prediction: one ``bincount`` of ``ref * 26 + pred`` (much faster than comparing label by
    label; bench/metrics.py), in slabs along the first axis to bound the memory of the int64 codes."""
    counts = np.zeros(_NUM_VALUES * _NUM_VALUES, dtype=np.int64)
    step = max(1, _HISTOGRAM_SLAB_VOXELS // max(1, ref[0].size))
    for start in range(0, ref.shape[0], step):
        codes = ref[start : start + step].astype(np.int64) * _NUM_VALUES
        codes += pred[start : start + step]
        counts += np.bincount(codes.ravel(), minlength=counts.size)
    return counts.reshape(_NUM_VALUES, _NUM_VALUES)


def _mean_of(rows: list[LabelMetrics]) -> MeanMetrics:
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    measured = [row for row in rows if row.hd95_mm is not None]
    return MeanMetrics(
        dice=mean([row.dice for row in rows]),
        hd95_mm=mean([row.hd95_mm for row in measured]),
        assd_mm=mean([row.assd_mm for row in measured]),
        nsd=mean([row.nsd for row in rows]),
        labels=len(rows),
        labels_with_distances=len(measured),
    )


def _confusion(joint: np.ndarray, wanted: tuple[int, ...]) -> list[VertebraConfusion]:
    rows = []
    for value in wanted:
        row = joint[value]
        total = int(row.sum())
        if total == 0:
            continue
        covered_by = tuple(
            Overlap(
                label=int(p),
                name=label_name(p) if p else "background",
                voxels=int(row[p]),
                fraction=float(row[p] / total),
            )
            for p in sorted(np.flatnonzero(row), key=lambda p: (-row[p], p))
        )
        main = int(np.argmax(row[1:])) + 1 if row[1:].any() else None
        off_by_one = main is not None and abs(main - value) == 1
        rows.append(
            VertebraConfusion(value, label_name(value), total, covered_by, main, off_by_one)
        )
    return rows


def _level_errors(confusion: list[VertebraConfusion]) -> list[LevelError]:
    errors = []
    for row in confusion:
        if row.main_label is None or row.main_label == row.label:
            continue
        fraction = next(o.fraction for o in row.covered_by if o.label == row.main_label)
        levels = abs(row.main_label - row.label)
        how_far = "off by one level" if levels == 1 else f"off by {levels} levels"
        predicted = label_name(row.main_label)
        message = f"{row.name} mostly labelled {predicted} ({fraction:.0%}): {how_far}"
        errors.append(
            LevelError(
                row.label, row.name, row.main_label, predicted, fraction, row.off_by_one, message
            )
        )
    return errors


_LEVEL_WORDS = {1: "one level", 2: "two levels", 3: "three levels"}


def summarize_levels(
    confusion: Iterable[VertebraConfusion], counts: VertebraCounts
) -> tuple[str, ...]:
    """The level errors of a case in a few phrases: consecutive reference vertebrae mostly
    labelled the same number of levels off make one phrase ("T10–L5 labelled one level too low
    (8 vertebrae)"; too low = as a more caudal vertebra), as do consecutive vertebrae covered by
    no predicted vertebra ("C1–C2 not found (2 vertebrae)"); then the labels found in the
    prediction only ("L6 only in prediction")."""
    shifted, not_found = [], []
    for row in confusion:
        if row.main_label is None:
            not_found.append((row.label, 0))
        elif row.main_label != row.label:
            shifted.append((row.label, row.main_label - row.label))
    phrases = []
    for first, last, shift in _runs(shifted):
        levels = _LEVEL_WORDS.get(abs(shift), f"{abs(shift)} levels")
        way = "too low" if shift > 0 else "too high"
        phrases.append(f"{_span(first, last)} labelled {levels} {way}{_how_many(first, last)}")
    for first, last, _ in _runs(not_found):
        phrases.append(f"{_span(first, last)} not found{_how_many(first, last)}")
    for first, last, _ in _runs([(v, 0) for v in counts.only_in_prediction]):
        phrases.append(f"{_span(first, last)} only in prediction")
    return tuple(phrases)


def _runs(items: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(first, last, key) of each run of consecutive labels with one key, from (label, key)."""
    runs: list[list[int]] = []
    for label, key in sorted(items):
        if runs and runs[-1][1] == label - 1 and runs[-1][2] == key:
            runs[-1][1] = label
        else:
            runs.append([label, label, key])
    return [tuple(run) for run in runs]


def _span(first: int, last: int) -> str:
    return label_name(first) if first == last else f"{label_name(first)}–{label_name(last)}"


def _how_many(first: int, last: int) -> str:
    return "" if first == last else f" ({last - first + 1} vertebrae)"


def _counts(ref_counts, pred_counts, wanted: tuple[int, ...]) -> VertebraCounts:
    in_ref = tuple(v for v in wanted if ref_counts[v])
    in_pred = tuple(v for v in wanted if pred_counts[v])
    only_ref = tuple(v for v in in_ref if not pred_counts[v])
    only_pred = tuple(v for v in in_pred if not ref_counts[v])
    callouts = []
    if len(in_ref) != len(in_pred):
        callouts.append(f"{len(in_pred)} vertebrae in prediction, {len(in_ref)} in reference")
    callouts += [f"{label_name(v)} missing in prediction" for v in only_ref]
    callouts += [f"{label_name(v)} in prediction only" for v in only_pred]
    return VertebraCounts(
        len(in_ref), len(in_pred), in_ref, in_pred, only_ref, only_pred, tuple(callouts)
    )


def _nonzero_box(array: np.ndarray, projection=None) -> tuple[slice, ...] | None:
    """Tight bounding box (slices) of the non-zero voxels of a non-negative array; None if none.

    One max-reduction over the whole array, along its outermost axis in memory (far cheaper than
    ``ndimage.find_objects`` on a CT; see ../shared/NOTES.md), gives the other
    axes' extent; the reduced axis's extent is read inside that box only. ``projection`` is
    the ``(axis, max)`` pair of :func:`_outer_projection`, when already computed.
    """
    if array.ndim == 1:
        hits = np.flatnonzero(array)
        return (slice(int(hits[0]), int(hits[-1]) + 1),) if hits.size else None
    axis, reduced = projection or _outer_projection(array)
    rest = _nonzero_box(reduced != 0)
    if rest is None:
        return None
    index = list(rest)
    index.insert(axis, slice(None))
    others = tuple(a for a in range(array.ndim) if a != axis)
    hits = np.flatnonzero(array[tuple(index)].any(axis=others))
    index[axis] = slice(int(hits[0]), int(hits[-1]) + 1)
    return tuple(index)


def _outer_projection(array: np.ndarray) -> tuple[int, np.ndarray]:
    axis = int(np.argmax([abs(stride) for stride in array.strides]))
    return axis, array.max(axis=axis)


def _union_box(a, b):
    if a is None or b is None:
        return b if a is None else a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def _check_volumes(reference, prediction, spacing_mm) -> tuple[np.ndarray, tuple | None]:
    """Validate two label volumes; returns (spacing, bounding box of both foregrounds)."""
    for role, array in (("reference", reference), ("prediction", prediction)):
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{role} must be a numpy array, got {type(array).__name__}")
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{role} must be an integer label array, got dtype {array.dtype}")
        if array.ndim == 0 or array.size == 0:
            raise ValueError(f"{role} must be a non-empty volume, got shape {array.shape}")
    if reference.shape != prediction.shape:
        raise ValueError(
            f"shapes differ: reference {reference.shape}, prediction {prediction.shape}"
        )
    spacing = _check_spacing(spacing_mm, reference.ndim)
    boxes = []
    for role, array in (("reference", reference), ("prediction", prediction)):
        # The maximum comes from the projection the bounding box needs anyway; the minimum
        # costs a pass only for signed dtypes.
        projection = _outer_projection(array) if array.ndim > 1 else (0, array)
        high = int(projection[1].max())
        signed = np.issubdtype(array.dtype, np.signedinteger)
        if high > MAX_LABEL or (signed and array.min() < 0):
            raise ValueError(
                f"{role} has label values {array.min()}..{high}, expected 0..{MAX_LABEL} "
                "(0 background, 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6)"
            )
        boxes.append(_nonzero_box(array, projection if array.ndim > 1 else None))
    return spacing, _union_box(*boxes)


def _check_masks(reference, prediction) -> tuple[np.ndarray, np.ndarray]:
    ref, pred = np.asarray(reference), np.asarray(prediction)
    if ref.shape != pred.shape:
        raise ValueError(f"shapes differ: reference {ref.shape}, prediction {pred.shape}")
    if ref.size == 0:
        raise ValueError(f"masks are empty arrays (shape {ref.shape})")
    return np.atleast_1d(ref != 0), np.atleast_1d(pred != 0)


def _check_spacing(spacing_mm, ndim: int) -> np.ndarray:
    try:
        spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm must be {ndim} numbers (mm), got {spacing_mm!r}") from None
    if spacing.size != ndim:
        raise ValueError(f"spacing_mm needs one value (mm) per array axis, {ndim}: {spacing_mm!r}")
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise ValueError(f"spacing_mm must be finite and positive (mm), got {spacing_mm!r}")
    return spacing


def _check_tolerance(tolerance_mm) -> float:
    tolerance = float(tolerance_mm)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance_mm must be a finite number >= 0 (mm), got {tolerance_mm!r}")
    return tolerance


def _check_labels(labels: Iterable[int]) -> tuple[int, ...]:
    values = set()
    for value in labels:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"labels must be integers 1-{MAX_LABEL}, got {value!r}")
        if not 1 <= value <= MAX_LABEL:
            raise ValueError(f"labels must be within 1-{MAX_LABEL}, got {value}")
        values.add(int(value))
    return tuple(sorted(values))
