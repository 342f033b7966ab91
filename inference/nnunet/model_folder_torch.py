"""The torch side of an nnU-Net v2 model folder, for the commands that train or import a model:
the network its plans describe, and writing the folder.

The files are described by :mod:`inference.nnunet.model_folder`; each is written atomically
(:func:`ctspine.atomic.atomic_write`), so a reader never sees half a plans.json or checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from ctspine.atomic import atomic_write
from inference.nnunet.config import DEFAULT_CHECKPOINT
from inference.nnunet.model_folder import CONFIGURATION, checkpoint_dict


def build_network(plans: dict, *, n_classes: int) -> torch.nn.Module:
    """The one-channel network ``plans`` describe with ``n_classes`` outputs (background
    included), built as nnU-Net builds it, without deep supervision; weights freshly initialised
    from torch's random stream."""
    architecture = plans["configurations"][CONFIGURATION]["architecture"]
    return get_network_from_plans(
        architecture["network_class_name"],
        architecture["arch_kwargs"],
        architecture["_kw_requires_import"],
        1,
        n_classes,
        deep_supervision=False,
    )


def write_model_folder(
    folder: Path,
    *,
    plans: dict,
    dataset_json: dict,
    weights_per_fold: Mapping[int | str, Mapping[str, torch.Tensor]],
    mirroring_axes: Sequence[int],
) -> dict[str, str]:
    """Write ``folder/dataset.json``, ``folder/plans.json`` and, per fold,
    ``folder/fold_<fold>/checkpoint_final.pth`` holding that fold's network state dict.

    ``mirroring_axes``: the array axes ``(k, j, i)`` test-time mirroring may flip. Returns the
    SHA-256 (hex) of every file written, by its path relative to ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, payload in (("dataset.json", dataset_json), ("plans.json", plans)):
        data = (json.dumps(payload, indent=2) + "\n").encode()
        atomic_write(folder / name, data)
        written[name] = hashlib.sha256(data).hexdigest()
    for fold, weights in weights_per_fold.items():
        name = f"fold_{fold}/{DEFAULT_CHECKPOINT}"
        (folder / name).parent.mkdir(exist_ok=True)
        checkpoint = checkpoint_dict(weights, fold=fold, mirroring_axes=mirroring_axes)
        digest = hashlib.sha256()

        def save(handle: BinaryIO, checkpoint=checkpoint, digest=digest) -> None:
            torch.save(checkpoint, handle)
            handle.seek(0)
            while block := handle.read(1 << 20):
                digest.update(block)

        atomic_write(folder / name, save)
        written[name] = digest.hexdigest()
    return written
