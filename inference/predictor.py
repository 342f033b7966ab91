"""The nnU-Net v2 adapter: the only module of the project that imports nnunetv2 and torch.

A trained nnU-Net v2 model folder (``<Trainer>__<Plans>__<configuration>/`` holding ``dataset.json``,
``plans.json`` and ``fold_<f>/<checkpoint>``) is described by a :class:`PredictorConfig`, checked by
:func:`check_model_folder` and run by a :class:`VertebraPredictor`, which a worker builds once per
process through :func:`get_predictor` and reuses for every job.

Axis order (one convention everywhere in this module):

* ``image`` arrays are in NIfTI voxel index order (i, j, k), as nibabel gives them; in this project
  that is RAS+ canonical order (``viewer.imaging.volume_io``). ``spacing_mm`` is (i, j, k) in mm.
* nnU-Net's own convention is the array SimpleITK returns for a NIfTI file, which is (k, j, i), with
  the spacing reversed to match. :meth:`VertebraPredictor.predict` transposes on the way in and back
  on the way out, so the label volume it returns lies on the input grid, in the input order.
* ``plans.json`` values (``patch_size``, ``spacing``, ``transpose_forward``) are in nnU-Net's
  (k, j, i) order, as nnU-Net writes them.

The configuration half (above the "torch" sections) reads only JSON and file metadata and uses
neither torch nor nnU-Net, so it is cheap to call; importing this module, though, imports both
(~6 s, ~470 MB), so a web process that only validates settings may want that half split out.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from viewer.imaging.labels import LABEL_BY_NAME, MAX_LABEL, parse_label

logger = logging.getLogger(__name__)

ENV_MODEL_DIR = "CTSPINE_NNUNET_MODEL_DIR"
ENV_FOLDS = "CTSPINE_NNUNET_FOLDS"
ENV_CHECKPOINT = "CTSPINE_NNUNET_CHECKPOINT"
ENV_DEVICE = "CTSPINE_DEVICE"
ENV_LABEL_MAP = "CTSPINE_NNUNET_LABEL_MAP"
ENV_MODE = "CTSPINE_NNUNET_MODE"

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
MODES = {"accurate": True, "fast": False}  # mode name -> test-time mirroring
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Fraction of the progress bar given to preprocessing; the network pass takes up to 0.95, the
# resampling back to the input grid the rest. Rough weights: the network dominates on real scans.
_PROGRESS_PREPROCESSED = 0.05
_PROGRESS_NETWORK_DONE = 0.95


class ModelConfigError(ValueError):
    """The nnU-Net model settings are unusable; ``variable`` names the setting to fix."""

    def __init__(self, message: str, *, variable: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class ModelNotConfigured(ModelConfigError):
    """No model folder is set, so segmentation is unavailable."""


# --- configuration (JSON and file metadata only) -------------------------------------------------


@dataclass(frozen=True)
class PredictorConfig:
    """How to run one trained nnU-Net v2 model folder.

    ``folds``: e.g. ("all",) or (0, 1, 2, 3, 4); several folds are ensembled (logits averaged).
    ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    ``tile_step_size``: sliding-window step as a fraction of the patch size (nnU-Net default 0.5).
    ``mirroring``: test-time mirroring (mode "accurate"); 8x slower, off in mode "fast".
    ``label_map``: model label value -> CTSpine1K label value (1-25); None derives it from the
    label names in ``dataset.json``. Model labels missing from the map come out as 0.
    ``num_threads``: torch CPU threads; None uses every CPU this process may run on.
    """

    model_dir: Path
    folds: tuple[int | str, ...] = ("all",)
    checkpoint: str = DEFAULT_CHECKPOINT
    device: str = "auto"
    tile_step_size: float = 0.5
    mirroring: bool = True
    label_map: dict[int, int] | None = field(default=None, hash=False)
    num_threads: int | None = None

    @classmethod
    def from_env_values(
        cls,
        *,
        model_dir: str | None,
        folds: str | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        label_map: str | None = None,
        mode: str | None = None,
        tile_step_size: float = 0.5,
        num_threads: int | None = None,
    ) -> PredictorConfig:
        """Build a config from the raw strings of the ``CTSPINE_*`` settings (None or "" = unset).

        Checks the folder layout (files exist, JSON parses, folds and label map are valid) without
        loading any weights; raises :class:`ModelNotConfigured` when no model folder is set and
        :class:`ModelConfigError` naming the variable for anything malformed.
        """
        if not (model_dir or "").strip():
            raise ModelNotConfigured(
                "no nnU-Net model folder is set; segmentation is unavailable until it points at a "
                "trained model folder (the one holding dataset.json, plans.json and fold_*/)",
                variable=ENV_MODEL_DIR,
            )
        directory = Path(model_dir.strip()).expanduser()
        checkpoint_name = (checkpoint or "").strip() or DEFAULT_CHECKPOINT
        if "/" in checkpoint_name or "\\" in checkpoint_name or checkpoint_name.startswith("."):
            raise ModelConfigError(
                f"{checkpoint_name!r} must be a plain file name such as {DEFAULT_CHECKPOINT}",
                variable=ENV_CHECKPOINT,
            )
        if not 0 < float(tile_step_size) <= 1:
            raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
        dataset_json, plans = _read_model_jsons(directory)
        _configuration_plans(plans, _parse_folder_name(directory.name)[2])
        parsed_folds = (
            parse_folds(folds)
            if (folds or "").strip()
            else detect_folds(directory, checkpoint=checkpoint_name)
        )
        _check_checkpoints(directory, folds=parsed_folds, checkpoint=checkpoint_name)
        model_labels = _model_labels(dataset_json)
        parsed_map = None
        if (label_map or "").strip():
            parsed_map = parse_label_map(label_map, model_labels=model_labels)
        effective_label_map(parsed_map, model_labels=model_labels)  # fail now, not at the first job
        return cls(
            model_dir=directory,
            folds=parsed_folds,
            checkpoint=checkpoint_name,
            device=parse_device(device),
            tile_step_size=float(tile_step_size),
            mirroring=parse_mode(mode),
            label_map=parsed_map,
            num_threads=num_threads,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a model folder, small enough to store on a segmentation job.

    ``checkpoint_sha256``: first 16 hex digits of each fold's checkpoint, by fold name ("fold_all").
    ``model_labels``: dataset.json label value -> name; ``label_map``: model value -> CTSpine1K value
    actually applied. ``image_reader_writer``: the reader nnU-Net trained with ("SimpleITKIO" sees each
    file in its stored orientation; "SimpleITKIOWithReorient" sees RAS+).
    """

    model_dir: str
    folder_name: str
    dataset_name: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple[int | str, ...]
    checkpoint: str
    checkpoint_sha256: dict[str, str]
    model_labels: dict[int, str]
    label_map: dict[int, int]
    image_reader_writer: str
    patch_size: tuple[int, ...]
    spacing_mm: tuple[float, ...]  # nnU-Net's target spacing, (k, j, i) order

    @property
    def output_labels(self) -> tuple[int, ...]:
        """CTSpine1K label values (1-25) this model can produce, ascending."""
        return tuple(sorted({v for v in self.label_map.values() if v}))

    def as_dict(self) -> dict:
        """JSON-ready form (dict keys as strings, tuples as lists)."""
        return {
            "model_dir": self.model_dir,
            "folder_name": self.folder_name,
            "dataset_name": self.dataset_name,
            "trainer": self.trainer,
            "plans": self.plans,
            "configuration": self.configuration,
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": dict(self.checkpoint_sha256),
            "model_labels": {str(k): v for k, v in self.model_labels.items()},
            "label_map": {str(k): v for k, v in self.label_map.items()},
            "image_reader_writer": self.image_reader_writer,
            "patch_size": list(self.patch_size),
            "spacing_mm": list(self.spacing_mm),
        }


def parse_folds(value: str) -> tuple[int | str, ...]:
    """ "all" -> ("all",); "0,1,2" -> (0, 1, 2). ModelConfigError naming CTSPINE_NNUNET_FOLDS."""
    tokens = [token.strip() for token in value.split(",")]
    if tokens == ["all"]:
        return ("all",)
    if not all(token.isdigit() for token in tokens):
        raise ModelConfigError(
            f"{value!r} is not a fold list: use 'all' or fold numbers such as '0,1,2,3,4'",
            variable=ENV_FOLDS,
        )
    folds = tuple(int(token) for token in tokens)
    if len(set(folds)) != len(folds):
        raise ModelConfigError(f"{value!r} names a fold twice", variable=ENV_FOLDS)
    return folds


def detect_folds(model_dir: Path, *, checkpoint: str = DEFAULT_CHECKPOINT) -> tuple[int | str, ...]:
    """Folds present in ``model_dir``: the numbered ones holding ``checkpoint`` (as nnU-Net picks
    them), else ("all",) if it holds one, else every fold folder (so the missing checkpoint gets
    reported by name)."""
    fold_dirs = {path.name.removeprefix("fold_"): path for path in model_dir.glob("fold_*")}
    numbered = sorted(int(name) for name in fold_dirs if name.isdigit())
    with_checkpoint = [fold for fold in numbered if (fold_dirs[str(fold)] / checkpoint).is_file()]
    if with_checkpoint:
        return tuple(with_checkpoint)
    if (model_dir / "fold_all" / checkpoint).is_file():
        return ("all",)
    if numbered or "all" in fold_dirs:
        return tuple(numbered) or ("all",)
    raise ModelConfigError(
        f"{model_dir} has no fold_<n>/ or fold_all/ folder", variable=ENV_MODEL_DIR
    )


def parse_device(value: str | None) -> str:
    """ "auto" (default), "cpu", "cuda" or "cuda:N"; ModelConfigError naming CTSPINE_DEVICE."""
    device = (value or "").strip().lower() or "auto"
    if not _DEVICE_PATTERN.match(device):
        raise ModelConfigError(
            f"{value!r} is not a device: use auto, cpu, cuda or cuda:N", variable=ENV_DEVICE
        )
    return device


def parse_mode(value: str | None) -> bool:
    """Test-time mirroring for a mode name: "accurate" (default) -> True, "fast" -> False."""
    mode = (value or "").strip().lower() or "accurate"
    if mode not in MODES:
        raise ModelConfigError(f"{value!r} is not a mode: use accurate or fast", variable=ENV_MODE)
    return MODES[mode]


def parse_label_map(value: str, *, model_labels: Mapping[int, str]) -> dict[int, int]:
    """Parse "1:20,2:21" or the path of a JSON object {"1": 20, ...} into model value -> CTSpine1K value.

    Keys are model label values or names from dataset.json ("vertebrae_L1"); values are CTSpine1K
    labels as numbers or names ("L1"), or 0 to drop a label. ModelConfigError names
    CTSPINE_NNUNET_LABEL_MAP.
    """
    text = value.strip()
    if text.endswith(".json") or Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelConfigError(
                f"cannot read label map file {path}: {error}", variable=ENV_LABEL_MAP
            ) from error
        if not isinstance(raw, dict):
            raise ModelConfigError(
                f'{path} must hold a JSON object such as {{"1": 20}}', variable=ENV_LABEL_MAP
            )
        pairs = [(str(key), str(target)) for key, target in raw.items()]
    else:
        pairs = []
        for item in text.split(","):
            key, sep, target = item.partition(":")
            if not sep:
                raise ModelConfigError(
                    f"{item.strip()!r} is not 'model_label:ctspine_label' (e.g. '1:20,2:21')",
                    variable=ENV_LABEL_MAP,
                )
            pairs.append((key, target))
    value_by_name = {name: number for number, name in model_labels.items()}
    mapping: dict[int, int] = {}
    for key, target in pairs:
        key, target = key.strip(), target.strip()
        if key.isdigit() and int(key) in model_labels:
            source = int(key)
        elif key in value_by_name:
            source = value_by_name[key]
        else:
            raise ModelConfigError(
                f"{key!r} is not a label of the model (dataset.json has "
                f"{', '.join(f'{v}={n}' for v, n in sorted(model_labels.items()))})",
                variable=ENV_LABEL_MAP,
            )
        if source == 0:
            raise ModelConfigError(
                "the background label 0 cannot be mapped", variable=ENV_LABEL_MAP
            )
        try:
            mapping[source] = 0 if target == "0" else parse_label(target)
        except ValueError as error:
            raise ModelConfigError(str(error), variable=ENV_LABEL_MAP) from error
    return mapping


def default_label_map(model_labels: Mapping[int, str]) -> dict[int, int]:
    """Model labels named like CTSpine1K labels ("C1" ... "L6", any case) -> their CTSpine1K value."""
    return {
        value: LABEL_BY_NAME[name.upper()].value
        for value, name in model_labels.items()
        if value and name.upper() in LABEL_BY_NAME
    }


def effective_label_map(
    label_map: Mapping[int, int] | None, *, model_labels: Mapping[int, str]
) -> dict[int, int]:
    """The map actually applied: ``label_map`` checked against the model, or the default by name."""
    if label_map is None:
        derived = default_label_map(model_labels)
        if not derived:
            raise ModelConfigError(
                "none of the model's labels ("
                + ", ".join(name for value, name in sorted(model_labels.items()) if value)
                + ") is named like a CTSpine1K vertebra (C1-C7, T1-T12, L1-L6); set a label map "
                "such as '1:20,2:21'",
                variable=ENV_LABEL_MAP,
            )
        return derived
    unknown = sorted(set(label_map) - set(model_labels) | ({0} & set(label_map)))
    if unknown:
        raise ModelConfigError(
            f"label values {unknown} are not foreground labels of the model", variable=ENV_LABEL_MAP
        )
    bad = sorted(v for v in label_map.values() if not 0 <= v <= MAX_LABEL)
    if bad:
        raise ModelConfigError(
            f"target values {bad} are outside the CTSpine1K labels 0-{MAX_LABEL}",
            variable=ENV_LABEL_MAP,
        )
    return dict(label_map)


def check_model_folder(config: PredictorConfig) -> ModelInfo:
    """Validate ``config``'s model folder without loading weights and describe it.

    Reads dataset.json and plans.json, checks every fold checkpoint exists and hashes it (cached by
    size and mtime, so a worker pays once per file). Raises ModelConfigError naming the variable.
    """
    directory = Path(config.model_dir)
    dataset_json, plans = _read_model_jsons(directory)
    _check_checkpoints(directory, folds=config.folds, checkpoint=config.checkpoint)
    model_labels = _model_labels(dataset_json)
    label_map = effective_label_map(config.label_map, model_labels=model_labels)
    trainer, plans_name, configuration = _parse_folder_name(directory.name)
    configuration_plans = _configuration_plans(plans, configuration)
    return ModelInfo(
        model_dir=str(directory),
        folder_name=directory.name,
        dataset_name=str(
            plans.get("dataset_name") or dataset_json.get("name") or directory.parent.name
        ),
        trainer=trainer,
        plans=str(plans.get("plans_name") or plans_name),
        configuration=configuration,
        folds=tuple(config.folds),
        checkpoint=config.checkpoint,
        checkpoint_sha256={
            f"fold_{fold}": _sha256_prefix(directory / f"fold_{fold}" / config.checkpoint)
            for fold in config.folds
        },
        model_labels=model_labels,
        label_map=label_map,
        image_reader_writer=str(plans.get("image_reader_writer", "SimpleITKIO")),
        patch_size=tuple(int(n) for n in configuration_plans["patch_size"]),
        spacing_mm=tuple(float(s) for s in configuration_plans["spacing"]),
    )


def _configuration_plans(plans: dict, name: str) -> dict:
    """plans.json's entry for configuration ``name``, ``inherits_from`` resolved as nnU-Net does."""
    chain: list[dict] = []
    while True:
        if name not in plans["configurations"]:
            raise ModelConfigError(
                f"plans.json has no configuration {name!r} (the folder name or an inherits_from "
                f"says so); it has {', '.join(plans['configurations'])}",
                variable=ENV_MODEL_DIR,
            )
        if any(entry["_name"] == name for entry in chain):
            raise ModelConfigError(
                f"plans.json configurations inherit in a circle at {name!r}", variable=ENV_MODEL_DIR
            )
        entry = {"_name": name, **plans["configurations"][name]}
        chain.append(entry)
        if "inherits_from" not in entry:
            break
        name = entry["inherits_from"]
    resolved: dict = {}
    for entry in reversed(chain):  # the child's keys override its parent's
        resolved.update(entry)
    missing = {"patch_size", "spacing"} - set(resolved)
    if missing:
        raise ModelConfigError(
            f"plans.json configuration {chain[0]['_name']!r} lacks {', '.join(sorted(missing))}",
            variable=ENV_MODEL_DIR,
        )
    return resolved


def _read_model_jsons(directory: Path) -> tuple[dict, dict]:
    if not directory.is_dir():
        raise ModelConfigError(f"{directory} is not a folder", variable=ENV_MODEL_DIR)
    loaded = []
    for name in ("dataset.json", "plans.json"):
        path = directory / name
        if not path.is_file():
            inside = sorted(p.name for p in directory.glob("*__*__*") if p.is_dir())
            hint = f"; it holds {', '.join(inside)}: point at one of those" if inside else ""
            raise ModelConfigError(
                f"{directory} has no {name}: point it at the trained model folder "
                f"(<Trainer>__<Plans>__<configuration>/){hint}",
                variable=ENV_MODEL_DIR,
            )
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelConfigError(
                f"cannot read {path}: {error}", variable=ENV_MODEL_DIR
            ) from error
    dataset_json, plans = loaded
    if not isinstance(dataset_json, dict) or not isinstance(plans, dict):
        raise ModelConfigError(
            f"{directory}: dataset.json and plans.json must hold JSON objects",
            variable=ENV_MODEL_DIR,
        )
    if (
        not isinstance(dataset_json.get("labels"), dict)
        or "background" not in dataset_json["labels"]
    ):
        raise ModelConfigError(
            f"{directory / 'dataset.json'} has no 'labels' with a background entry",
            variable=ENV_MODEL_DIR,
        )
    if not isinstance(plans.get("configurations"), dict):
        raise ModelConfigError(
            f"{directory / 'plans.json'} has no 'configurations'", variable=ENV_MODEL_DIR
        )
    return dataset_json, plans


def _model_labels(dataset_json: dict) -> dict[int, str]:
    """dataset.json ``labels`` (name -> value) as value -> name, without the ignore label."""
    labels: dict[int, str] = {}
    for name, value in dataset_json["labels"].items():
        if isinstance(value, (list, tuple)):
            raise ModelConfigError(
                "region-based models (labels given as lists of values) are not supported",
                variable=ENV_MODEL_DIR,
            )
        if not isinstance(value, int) or value < 0:
            raise ModelConfigError(
                f"dataset.json label {name!r} has value {value!r}, not a label number",
                variable=ENV_MODEL_DIR,
            )
        if name != "ignore":
            labels[value] = str(name)
    return labels


def _check_checkpoints(directory: Path, *, folds: Sequence[int | str], checkpoint: str) -> None:
    for fold in folds:
        fold_dir = directory / f"fold_{fold}"
        if not fold_dir.is_dir():
            raise ModelConfigError(
                f"{directory} has no fold_{fold}/ (folds present: "
                f"{', '.join(sorted(p.name for p in directory.glob('fold_*'))) or 'none'})",
                variable=ENV_FOLDS,
            )
        if not (fold_dir / checkpoint).is_file():
            raise ModelConfigError(
                f"{fold_dir} has no {checkpoint} (it has "
                f"{', '.join(sorted(p.name for p in fold_dir.glob('*.pth'))) or 'no .pth file'})",
                variable=ENV_CHECKPOINT,
            )


def _parse_folder_name(name: str) -> tuple[str, str, str]:
    """nnU-Net names its output folders "<trainer>__<plans>__<configuration>"."""
    parts = name.split("__")
    if len(parts) != 3 or not all(parts):
        raise ModelConfigError(
            f"the folder name {name!r} is not nnU-Net's '<Trainer>__<Plans>__<configuration>'",
            variable=ENV_MODEL_DIR,
        )
    return parts[0], parts[1], parts[2]


_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def _sha256_prefix(path: Path, *, length: int = 16) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _sha_lock:
        if key in _sha_cache:
            return _sha_cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    with _sha_lock:
        _sha_cache[key] = digest.hexdigest()[:length]
    return _sha_cache[key]


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
    def device_name(self) -> str:
        """The device actually used, e.g. "cpu" or "cuda:0"."""
        if self.device.type == "cuda" and self.device.index is None:
            return f"cuda:{torch.cuda.current_device()}"
        return str(self.device)

    def predict(
        self,
        *,
        image: np.ndarray,
        spacing_mm: Sequence[float],
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Segment the vertebrae of a 3D CT volume; see :meth:`predict_result`."""
        return self.predict_result(image=image, spacing_mm=spacing_mm, progress=progress).labels

    def predict_result(
        self,
        *,
        image: np.ndarray,
        spacing_mm: Sequence[float],
        progress: ProgressCallback | None = None,
    ) -> PredictionResult:
        """Segment the vertebrae of a 3D CT volume.

        ``image``: intensities in HU, shape (I, J, K) in NIfTI voxel index order (RAS+ canonical in
        this project; any dtype). ``spacing_mm``: voxel size in mm, (i, j, k) order.
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


def clear_predictors() -> None:
    """Forget every cached predictor (tests; or a worker switching models to free memory)."""
    with _predictors_lock:
        _predictors.clear()


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


# --- torch: writing a model folder's checkpoint (tiny test and demo models) ------------------------


def write_checkpoint(
    *,
    model_dir: Path,
    fold: int | str = "all",
    seed: int = 0,
    checkpoint: str = DEFAULT_CHECKPOINT,
    fit_image: np.ndarray | None = None,
    fit_foreground: np.ndarray | None = None,
    fit_spacing_mm: Sequence[float] | None = None,
    mirroring_axes: tuple[int, ...] = (0, 1, 2),
) -> Path:
    """Write ``model_dir/fold_<fold>/<checkpoint>`` for the network ``model_dir``'s plans describe.

    The network is built exactly as nnU-Net builds it when loading (the trainer named by the folder,
    its ``build_network_architecture``), with weights initialised from ``seed``. Trainer and
    configuration come from the folder name; dataset.json and plans.json must already be there.

    With ``fit_image`` (HU, (i, j, k) order like :meth:`VertebraPredictor.predict`),
    ``fit_foreground`` (bool mask on the same grid) and ``fit_spacing_mm``, the final 1x1x1
    segmentation layer is fitted to that example by weighted least squares on the network's own
    features: background vs foreground, each foreground class a seeded random perturbation of the
    foreground row. The result is a deterministic model, untrained but not arbitrary, that labels
    bright structures; none of its weights is set by hand. Returns the checkpoint path.
    """
    model_dir = Path(model_dir)
    dataset_json, plans = _read_model_jsons(model_dir)
    trainer_name, _plans_name, configuration = _parse_folder_name(model_dir.name)
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        network = trainer_class.build_network_architecture(
            plans_manager,
            configuration_manager,
            len(dataset_json["channel_names"]),
            label_manager.num_segmentation_heads,
            enable_deep_supervision=False,
        )
        if fit_image is not None:
            _fit_segmentation_head(
                network=network,
                image_kji=np.asarray(fit_image).transpose(2, 1, 0),
                foreground_kji=np.asarray(fit_foreground, dtype=bool).transpose(2, 1, 0),
                spacing_kji=list(map(float, fit_spacing_mm))[::-1],
                plans_manager=plans_manager,
                configuration_manager=configuration_manager,
                dataset_json=dataset_json,
                seed=seed,
            )
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    path = model_dir / f"fold_{fold}" / checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "network_weights": network.state_dict(),
            "init_args": {"configuration": configuration, "fold": fold},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": tuple(mirroring_axes),
        },
        tmp,
    )
    tmp.replace(path)
    return path


def _fit_segmentation_head(
    *,
    network,
    image_kji,
    foreground_kji,
    spacing_kji,
    plans_manager,
    configuration_manager,
    dataset_json,
    seed,
) -> None:
    """Least-squares fit of the last 1x1x1 conv of nnU-Net's U-Net decoder, in place."""
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    data, seg, _props = preprocessor.run_case_npy(
        image_kji[None].astype(np.float32),
        foreground_kji[None].astype(np.int16),
        {"spacing": spacing_kji},
        plans_manager,
        configuration_manager,
        dataset_json,
    )
    head = network.decoder.seg_layers[-1]  # the 1x1x1 conv producing the full-resolution logits
    captured = {}
    hook = head.register_forward_hook(lambda _m, inputs, _o: captured.setdefault("x", inputs[0]))
    network.eval()
    with torch.inference_mode():
        network(torch.from_numpy(data[None]))
    hook.remove()
    features = captured["x"][0].reshape(captured["x"].shape[1], -1).T.double().numpy()
    target = (seg[0].reshape(-1) > 0).astype(np.int64)
    counts = np.bincount(target, minlength=2)
    if counts.min() == 0:
        raise ValueError("the fit example needs both foreground and background voxels")
    # Balance the two classes (bone is a few percent of a CT) so foreground is not ignored.
    weights = np.sqrt(1.0 / counts[target])
    design = np.hstack([features, np.ones((len(features), 1))]) * weights[:, None]
    onehot = np.eye(2)[target] * weights[:, None]
    gram = design.T @ design
    solution = np.linalg.solve(gram + 1e-6 * np.trace(gram) * np.eye(len(gram)), design.T @ onehot)
    background, foreground = solution[:, 0], solution[:, 1]
    n_classes = head.out_channels
    generator = np.random.default_rng(seed)
    margin_scale = np.std(features @ (foreground - background)[:-1])
    rows = [background]
    for _ in range(1, n_classes):
        direction = generator.normal(size=features.shape[1])
        direction *= 0.1 * margin_scale / max(np.std(features @ direction), 1e-12)
        rows.append(foreground + np.append(direction, 0.0))
    rows = np.stack(rows)  # (classes, features + 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(rows[:, :-1]).float().reshape(head.weight.shape))
        head.bias.copy_(torch.from_numpy(rows[:, -1]).float())
