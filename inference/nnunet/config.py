"""nnU-Net v2 model settings: which trained model folder to run and how, checked without torch.

A trained nnU-Net v2 model folder (``<Trainer>__<Plans>__<configuration>/`` holding ``dataset.json``,
``plans.json`` and ``fold_<f>/<checkpoint>``) is described by a :class:`PredictorConfig` and checked
by :func:`check_model_folder`. Everything here reads only JSON and file metadata: neither torch nor
nnU-Net is imported, so a web process can validate the settings (and say what is wrong) without
paying for them (seconds and hundreds of MB: NOTES.md). Running the model is :mod:`inference.predictor`'s job.

``plans.json`` values (``patch_size``, ``spacing``) are in nnU-Net's (k, j, i) order, as nnU-Net
writes them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctspine.labels import LABEL_BY_NAME, MAX_LABEL, parse_label

ENV_MODEL_DIR = "CTSPINE_NNUNET_MODEL_DIR"
ENV_FOLDS = "CTSPINE_NNUNET_FOLDS"
ENV_CHECKPOINT = "CTSPINE_NNUNET_CHECKPOINT"
ENV_DEVICE = "CTSPINE_DEVICE"
ENV_LABEL_MAP = "CTSPINE_NNUNET_LABEL_MAP"
ENV_MODE = "CTSPINE_NNUNET_MODE"

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
IMPORT_RECORD = "import_record.json"  # written by manage.py import_nnunet_v1 beside plans.json
MODES = {"accurate": True, "fast": False}  # mode name -> test-time mirroring
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ModelConfigError(ValueError):
    """The nnU-Net model settings are unusable; ``variable`` names the setting to fix."""

    def __init__(self, message: str, *, variable: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class ModelNotConfigured(ModelConfigError):
    """No model folder is set, so segmentation is unavailable."""


@dataclass(frozen=True)
class PredictorConfig:
    """How to run one trained nnU-Net v2 model folder.

    ``folds``: e.g. ("all",) or (0, 1, 2, 3, 4); several folds are ensembled (logits averaged).
    ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    ``tile_step_size``: sliding-window step as a fraction of the patch size (nnU-Net default 0.5).
    ``mirroring``: test-time mirroring (mode "accurate"): eight network passes per tile instead
    of one; off in mode "fast".
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
        dataset_json, plans = read_model_jsons(directory)
        _configuration_plans(plans, parse_folder_name(directory.name)[2])
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
    file in its stored orientation; "SimpleITKIOWithReorient" sees RAS+). ``import_record``: for a
    folder imported from nnU-Net v1, its ``import_record.json`` (source path, SHA-256 of every file
    read); None for a model trained with v2.
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
    import_record: dict | None = field(default=None, hash=False, compare=False)

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
            "import_record": self.import_record,
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
    dataset_json, plans = read_model_jsons(directory)
    _check_checkpoints(directory, folds=config.folds, checkpoint=config.checkpoint)
    model_labels = _model_labels(dataset_json)
    label_map = effective_label_map(config.label_map, model_labels=model_labels)
    trainer, plans_name, configuration = parse_folder_name(directory.name)
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
        import_record=read_import_record(directory),
    )


def read_import_record(directory: Path) -> dict | None:
    """``import_record.json`` of an imported model folder, or None when the folder has none."""
    path = Path(directory) / IMPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelConfigError(f"cannot read {path}: {error}", variable=ENV_MODEL_DIR) from error
    if not isinstance(record, dict) or not isinstance(record.get("files_read"), list):
        raise ModelConfigError(f"{path} has no 'files_read' list", variable=ENV_MODEL_DIR)
    return record


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


def read_model_jsons(directory: Path) -> tuple[dict, dict]:
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


def parse_folder_name(name: str) -> tuple[str, str, str]:
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
