"""``manage.py import_nnunet_v1 SOURCE OUT``: an nnU-Net v1 model -> an nnU-Net v2 model folder.

Runs as a command, never in the web process, so it may import torch.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ctspine.atomic import atomic_write
from inference.nnunet.config import IMPORT_RECORD
from inference.nnunet.model_folder_torch import write_model_folder
from inference.nnunet.safe_pickle import UnsafePickleError
from inference.nnunet.v1_checkpoint import V1_MIRROR_AXES, convert_weights, load_v1_state_dict
from inference.nnunet.v1_import import (
    DEFAULT_CHECKPOINT,
    V1ImportError,
    locate_v1_files,
    read_source,
    read_v1_model,
    v2_dataset_json,
    v2_folder_name,
    v2_plans_json,
)

DEFAULT_DATASET_NAME = "Dataset601_CTSpine1K"


def import_v1_model(
    source: Path,
    out: Path,
    *,
    checkpoint: str = DEFAULT_CHECKPOINT,
    fold: str = "all",
    dataset_name: str | None = None,
    overwrite: bool = False,
    report=lambda line: None,
) -> Path:
    """Convert the v1 model in ``source`` and return the v2 model folder written.

    ``out`` is that folder when its name is ``<Trainer>__<Plans>__<configuration>``, else the
    folder to create it in. The folder is assembled beside its final place and renamed into it.
    ``report`` receives one line per file read (path and SHA-256) and per file written.
    """
    files = locate_v1_files(source, checkpoint=checkpoint, fold=fold)
    model = read_v1_model(files)
    checkpoint_source, checkpoint_bytes = read_source(files.checkpoint, role="checkpoint")
    sources = (*model.sources, checkpoint_source)
    for item in sources:
        report(f"read {item.path} sha256 {item.sha256}")
    state = load_v1_state_dict(checkpoint_bytes, source=str(files.checkpoint))
    del checkpoint_bytes
    if dataset_name is None:
        task = files.source.parent.name if files.layout == "trainer_folder" else ""
        dataset_name = task if task.startswith("Task") else DEFAULT_DATASET_NAME
    plans_json = v2_plans_json(model, dataset_name=dataset_name)
    dataset_json = v2_dataset_json(model, dataset_name=dataset_name)
    weights = convert_weights(model, state, plans_json=plans_json)

    out = Path(out).expanduser().resolve()
    target = out if out.name.count("__") == 2 else out / v2_folder_name(model)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise V1ImportError(
            f"{target} already exists and is not empty; pass --overwrite to replace it"
        )
    staging = target.with_name(f".{target.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        written = write_model_folder(
            staging,
            plans=plans_json,
            dataset_json=dataset_json,
            weights_per_fold={model.fold: weights},
            mirroring_axes=V1_MIRROR_AXES,
        )
        record = {
            "origin": "nnU-Net v1",
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(files.source),
            "source_layout": files.layout,
            "v1_trainer": model.trainer,
            "v1_plans": model.plans_identifier,
            "v1_stage": model.stage,
            "v1_fold": model.fold,
            "v1_checkpoint": checkpoint,
            "files_read": [item.as_dict() for item in sources],
            "files_written": written,
        }
        atomic_write(staging / IMPORT_RECORD, (json.dumps(record, indent=2) + "\n").encode())
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, digest in written.items():
        report(f"wrote {target / name} sha256 {digest}")
    return target


class Command(BaseCommand):
    help = (
        "Convert an nnU-Net v1 3d_fullres model (e.g. the one released with the CTSpine1K paper) "
        "into an nnU-Net v2 model folder for CTSPINE_NNUNET_MODEL_DIR. SOURCE: a folder holding "
        "plans.pkl, <checkpoint>.model and <checkpoint>.model.pkl, or a v1 trainer folder "
        "(<Trainer>__<Plans>/ with plans.pkl and all/ or fold_N/). OUT: the model folder to write "
        "(named <Trainer>__<Plans>__3d_fullres), or the folder to create it in. Prints the SHA-256 "
        "of every file read and records them in OUT's import_record.json."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", type=Path)
        parser.add_argument("out", type=Path)
        parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
        parser.add_argument("--fold", default="all", help="'all' (default) or a fold number")
        parser.add_argument("--dataset-name", default=None)
        parser.add_argument("--overwrite", action="store_true")

    def handle(self, *args, **options):
        try:
            target = import_v1_model(
                options["source"],
                options["out"],
                checkpoint=options["checkpoint"],
                fold=options["fold"],
                dataset_name=options["dataset_name"],
                overwrite=options["overwrite"],
                report=self.stdout.write,
            )
        except (V1ImportError, UnsafePickleError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"export CTSPINE_NNUNET_MODEL_DIR={target}")
