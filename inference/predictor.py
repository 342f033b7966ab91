"""The nnU-Net v2 adapter: the only module of the project that imports nnunetv2 and torch.

A trained model folder, described and checked by :mod:`inference.nnunet.config` (no torch there),
is run by a :class:`VertebraPredictor`, which a worker builds once per process through
:func:`get_predictor` and reuses for every job.

Axis order (one convention everywhere in this module):

* ``image`` arrays are in NIfTI voxel index order (i, j, k), as nibabel gives them: the file's
  stored order for models trained with nnU-Net's SimpleITKIO/NibabelIO readers, RAS+ for
  NibabelIOWithReorient ones (:attr:`VertebraPredictor.sees_stored_orientation`; the pipeline
  reorients). ``spacing_mm`` is (i, j, k) in mm.
* nnU-Net's own convention is the array SimpleITK returns for a NIfTI file, which is (k, j, i), with
  the spacing reversed to match. :meth:`VertebraPredictor.predict_result` transposes on the way in and back
  on the way out, so the label volume it returns lies on the input grid, in the input order.
* ``plans.json`` values (``patch_size``, ``spacing``, ``transpose_forward``) are in nnU-Net's
  (k, j, i) order, as nnU-Net writes them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from inference.nnunet.config import (
    ENV_DEVICE,
    ModelConfigError,
    PredictorConfig,
    check_model_folder,
)
from inference.nnunet.v1_inference import is_v1_import, run_like_v1

logger = logging.getLogger(__name__)

# Fraction of the progress bar given to preprocessing; the network pass takes up to 0.95, the
# resampling back to the input grid the rest. Rough weights: the network dominates on real scans.
_PROGRESS_PREPROCESSED = 0.05
_PROGRESS_NETWORK_DONE = 0.95


# --- torch: running a model -----------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionTimings:
    """Wall-clock seconds: nnU-Net preprocessing (crop, normalise, resample to the model spacing),
    the sliding-window network pass (all folds), and the export back to the input grid."""

    preprocess_s: float
    network_s: float
    export_s: float
    total_s: float


@dataclass(frozen=True)
class PredictionResult:
    """``labels``: uint8 CTSpine1K labels (0-25) on the input grid, input axis order (i, j, k).
    ``tiles``: network evaluations of one patch (times folds), before mirroring."""

    labels: np.ndarray
    timings: PredictionTimings
    device: str
    tiles: int


ProgressCallback = Callable[[float], None]


class _InstrumentedPredictor(nnUNetPredictor):
    """nnUNetPredictor that reports progress per sliding-window tile and times its phases.

    Hooks only nnU-Net's per-tile and per-call methods; the computation is nnU-Net's own.
    """

    progress: ProgressCallback | None = None
    tiles_total = 0
    tiles_done = 0
    network_started = 0.0
    network_finished = 0.0

    def _internal_get_sliding_window_slicers(self, image_size):
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        # Called once per fold with the same image, so the total is known after the first call.
        self.tiles_total = len(slicers) * len(self.list_of_parameters)
        return slicers

    def _internal_maybe_mirror_and_predict(self, x):
        prediction = super()._internal_maybe_mirror_and_predict(x)
        self.tiles_done += 1
        if self.progress is not None and self.tiles_total:
            span = _PROGRESS_NETWORK_DONE - _PROGRESS_PREPROCESSED
            done = min(self.tiles_done / self.tiles_total, 1.0)
            self.progress(_PROGRESS_PREPROCESSED + span * done)
        return prediction

    def predict_logits_from_preprocessed_data(self, data):
        self.network_started = time.perf_counter()
        if self.progress is not None:
            self.progress(_PROGRESS_PREPROCESSED)
        logits = super().predict_logits_from_preprocessed_data(data)
        self.network_finished = time.perf_counter()
        return logits


class VertebraPredictor:
    """One loaded nnU-Net v2 model, reused for many predictions (build it once per process).

    Calls are serialised by a lock: nnU-Net swaps fold weights into one network per call.
    """

    def __init__(self, config: PredictorConfig):
        self.config = config
        self.info = check_model_folder(config)
        self.device = _resolve_device(config.device)
        if self.device.type == "cpu":
            torch.set_num_threads(_cpu_threads(config.num_threads))
        self._lock = threading.Lock()
        self._lut = _lookup_table(self.info.label_map, max(self.info.model_labels))
        started = time.perf_counter()
        # nnU-Net print()s status lines while loading; send them to the log instead of stdout.
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            self._nnunet = _InstrumentedPredictor(
                tile_step_size=config.tile_step_size,
                use_gaussian=True,
                use_mirroring=config.mirroring,
                perform_everything_on_device=self.device.type == "cuda",
                device=self.device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            self._nnunet.initialize_from_trained_model_folder(
                str(config.model_dir),
                use_folds=tuple(config.folds),
                checkpoint_name=config.checkpoint,
            )
        if is_v1_import(self._nnunet.plans_manager.plans):  # imported by manage.py import_nnunet_v1
            run_like_v1(self._nnunet)
        if captured.getvalue().strip():
            logger.debug("nnU-Net: %s", captured.getvalue().strip())
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "loaded nnU-Net model %s folds %s on %s in %.1f s",
            self.info.folder_name,
            ",".join(map(str, config.folds)),
            self.device,
            self.load_seconds,
        )

    @property
    def sees_stored_orientation(self) -> bool:
        """Whether the model gets scans in their files' voxel order (see pipeline.Predictor):
        nnU-Net's SimpleITKIO and NibabelIO read files as stored, NibabelIOWithReorient in RAS+."""
        return self.info.image_reader_writer != "NibabelIOWithReorient"

    @property
    def device_name(self) -> str:
        """The device actually used, e.g. "cpu" or "cuda:0"."""
        if self.device.type == "cuda" and self.device.index is None:
            return f"cuda:{torch.cuda.current_device()}"
        return str(self.device)

    def predict_result(
        self,
        *,
        image: np.ndarray,
        spacing_mm: Sequence[float],
        progress: ProgressCallback | None = None,
    ) -> PredictionResult:
        """Segment the vertebrae of a 3D CT volume.

        ``image``: intensities in HU, shape (I, J, K) in NIfTI voxel index order (the order
        :attr:`sees_stored_orientation` asks for; any dtype). ``spacing_mm``: voxel size in mm, (i, j, k) order.
        ``progress``: called from this thread with a fraction 0-1 that only grows.

        Returns uint8 CTSpine1K labels (0 background, 1-25 C1-L6) with the same shape and order as
        ``image``; model labels outside the label map become 0.
        """
        image = np.asarray(image)
        spacing = tuple(float(s) for s in spacing_mm)
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(f"expected a 3D volume, got shape {image.shape}")
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"expected three positive voxel sizes in mm, got {spacing_mm!r}")
        # (i, j, k) -> (k, j, i): the order SimpleITK gives nnU-Net for the same NIfTI file, with
        # the spacing reversed alike. A view, not a copy: nnU-Net copies to float32 itself.
        image_kji = image.transpose(2, 1, 0)[None]
        spacing_kji = list(spacing[::-1])
        with self._lock:
            nnunet = self._nnunet
            nnunet.progress, nnunet.tiles_done, nnunet.tiles_total = progress, 0, 0
            started = time.perf_counter()
            try:
                segmentation_kji = nnunet.predict_single_npy_array(
                    image_kji, {"spacing": spacing_kji}
                )
            finally:
                nnunet.progress = None
            finished = time.perf_counter()
            tiles = nnunet.tiles_total
            network_started, network_finished = nnunet.network_started, nnunet.network_finished
        labels = np.ascontiguousarray(self._lut[segmentation_kji].transpose(2, 1, 0))
        if labels.shape != image.shape:  # nnU-Net reverts its own crop and resampling
            raise RuntimeError(f"nnU-Net returned shape {labels.shape} for input {image.shape}")
        if progress is not None:
            progress(1.0)
        return PredictionResult(
            labels=labels,
            timings=PredictionTimings(
                preprocess_s=network_started - started,
                network_s=network_finished - network_started,
                export_s=finished - network_finished,
                total_s=finished - started,
            ),
            device=self.device_name,
            tiles=tiles,
        )


_predictors: dict[PredictorConfig, VertebraPredictor] = {}
_predictors_lock = threading.Lock()


def get_predictor(config: PredictorConfig) -> VertebraPredictor:
    """The process-wide predictor for ``config``, loaded on first use (a worker loads a model once)."""
    with _predictors_lock:
        predictor = _predictors.get(config)
        if predictor is None:
            predictor = _predictors[config] = VertebraPredictor(config)
        return predictor


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelConfigError(
                f"{name!r} was asked for but this process sees no CUDA device", variable=ENV_DEVICE
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelConfigError(
                f"{name!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist",
                variable=ENV_DEVICE,
            )
    return device


def _cpu_threads(requested: int | None) -> int:
    """Torch intra-op threads: as requested, else the CPUs this process may use (cgroup affinity).

    nnU-Net itself caps the network pass at ``nnUNet_def_n_proc`` threads (default 8).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"num_threads must be at least 1, got {requested}")
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _lookup_table(label_map: Mapping[int, int], max_model_label: int) -> np.ndarray:
    """uint8 table indexed by model label value, giving the CTSpine1K value (0 where unmapped)."""
    lut = np.zeros(max(max_model_label, *label_map, 0) + 1, dtype=np.uint8)
    for source, target in label_map.items():
        lut[source] = target
    return lut
