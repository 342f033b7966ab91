"""nnU-Net v1 checkpoint -> nnU-Net v2 ``checkpoint_final.pth`` (torch; used by the import command).

The v1 ``.model`` file is a torch pickle. It is loaded with PyTorch's weights-only unpickler,
which rebuilds tensors and plain containers only, plus :data:`ALLOWED_GLOBALS` (the numpy scalars
v1 stores in its training curves); anything else is refused with the name it asked for. The v1
weights are copied by name (:func:`inference.nnunet.v1_import.map_state_dict_names`) into the
``PlainConvUNet`` that nnU-Net v2 builds from the new ``plans.json``, so every shape is checked
against the network v2 will load.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import torch

from inference.nnunet.model_folder_torch import build_network
from inference.nnunet.v1_import import (
    V1ImportError,
    V1Model,
    map_state_dict_names,
    v2_parameters_without_v1_source,
)

# numpy scalars and dtypes, under the names numpy 1 and numpy 2 pickle them with.
ALLOWED_GLOBALS = [
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    (np._core.multiarray.scalar, "numpy._core.multiarray.scalar"),
    (np.dtype, "numpy.dtype"),
    *(
        (type(np.dtype(name)), f"numpy.dtypes.{type(np.dtype(name)).__name__}")
        for name in ("float16", "float32", "float64", "int32", "int64", "bool")
    ),
]
# Inference mirrors along every axis, as nnUNetTrainerV2's 3D data augmentation allows.
V1_MIRROR_AXES = (0, 1, 2)


def load_v1_state_dict(data: bytes, *, source: str) -> dict[str, torch.Tensor]:
    """The network weights of a v1 ``.model`` file's bytes, read weights-only."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise V1ImportError(
            f"{source} holds more than weights and plain data, so it was not loaded: "
            f"{str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, ValueError) as error:
        raise V1ImportError(f"{source} is not a readable PyTorch checkpoint: {error}") from error
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise V1ImportError(f"{source} has no 'state_dict' of tensors (not a v1 checkpoint)")
    return state


def convert_weights(model: V1Model, state: dict[str, torch.Tensor], *, plans_json: dict) -> dict:
    """The v2 network state dict: v1 weights copied into the PlainConvUNet ``plans_json``
    describes, by name, shapes checked; the biases Generic_UNet lacks are zero."""
    network = build_network(plans_json, n_classes=int(model.plans["num_classes"]) + 1)
    mapping = map_state_dict_names(model, list(state))
    num_pool = len(network.decoder.transpconvs)  # one upsampling per pooling
    with torch.no_grad():
        for v1_name, v2_name in mapping.items():
            target = network.get_parameter(v2_name)
            if tuple(target.shape) != tuple(state[v1_name].shape):
                raise V1ImportError(
                    f"v1 weight {v1_name} has shape {tuple(state[v1_name].shape)} but v2's "
                    f"{v2_name} has {tuple(target.shape)}: the plans do not describe this network"
                )
            target.copy_(state[v1_name].float())
        for v2_name in v2_parameters_without_v1_source(num_pool=num_pool):
            network.get_parameter(v2_name).zero_()
    return network.state_dict()
