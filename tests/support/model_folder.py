"""Build a tiny but real nnU-Net v2 model folder, for tests and benchmarks (not runtime code).

The folder is what ``nnUNetv2_train`` would leave behind (``dataset.json``, ``plans.json``,
``fold_<f>/checkpoint_final.pth``), for a 3-stage PlainConvUNet with 8/16/32 features and a 64³
patch (NOTES.md: a 64³ patch, not 32³, keeps PyTorch on its fast CPU convolution). Its weights
are seeded, and its final layer is fitted to a synthetic spine phantom (:func:`seeded_weights`),
so it labels bright bone rather than nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from inference.nnunet.model_folder import (
    CONFIGURATION,
    CTSPINE1K_LABELS,
    TRAINER,
    TYPICAL_VERTEBRA_CT_INTENSITY,
    dataset_json,
    folder_name,
    plain_conv_unet,
    plans_json,
)
from inference.nnunet.model_folder_torch import write_model_folder

CTSPINE_LABEL_NAMES: tuple[str, ...] = tuple(CTSPINE1K_LABELS)  # C1 ... L6


def build_tiny_model_folder(
    root: Path,
    *,
    seed: int = 0,
    label_names: Sequence[str] = CTSPINE_LABEL_NAMES,
    patch_size: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    features_per_stage: Sequence[int] = (8, 16, 32),
    dataset_id: int = 999,
    dataset_name: str = "Tiny",
    folds: Sequence[int | str] = ("all",),
    fit_to_phantom: bool = True,
) -> Path:
    """Write ``root/Dataset<id>_<name>/nnUNetTrainer__nnUNetPlans__3d_fullres/`` and return it.

    ``label_names``: foreground label names, given values 1, 2, ... in order (background is 0).
    ``patch_size`` (voxels) and ``spacing`` (mm) are in nnU-Net's (k, j, i) order, as plans.json
    stores them; every patch edge must be divisible by 4 (two 2x downsamplings).
    ``folds``: one checkpoint per fold, each seeded with ``seed + position``.
    ``fit_to_phantom``: fit the final layer so bone in a synthetic phantom comes out labelled;
    False keeps the plain seeded initialisation (labels then vary arbitrarily).
    """
    if any(int(edge) % 4 for edge in patch_size):
        raise ValueError(f"patch edges must be divisible by 4, got {tuple(patch_size)}")
    if len(features_per_stage) != 3:
        raise ValueError("the tiny network has exactly three stages")
    model_dir = Path(root) / f"Dataset{dataset_id:03d}_{dataset_name}" / folder_name()
    dataset = dataset_json(
        name=f"Dataset{dataset_id:03d}_{dataset_name}",
        labels={name: value for value, name in enumerate(label_names, 1)},
        n_training=1,
        description="Tiny seeded nnU-Net v2 model for tests and demos; not a trained model.",
    )
    plans = plans_json(
        dataset_name=dataset["name"],
        architecture=plain_conv_unet(
            features_per_stage=features_per_stage,
            kernel_sizes=[[3, 3, 3]] * 3,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        ),
        patch_size=patch_size,
        spacing=spacing,
        intensity_properties=TYPICAL_VERTEBRA_CT_INTENSITY,
        image_reader_writer="SimpleITKIO",
    )
    fit = {}
    if fit_to_phantom:
        image, foreground = spine_phantom(shape=tuple(int(n) for n in patch_size[::-1]), seed=seed)
        fit = {
            "fit_image": image,
            "fit_foreground": foreground,
            "fit_spacing_mm": tuple(spacing[::-1]),
        }
    weights_per_fold = {
        fold: seeded_weights(plans=plans, dataset_json=dataset, seed=seed + position, **fit)
        for position, fold in enumerate(folds)
    }
    write_model_folder(
        model_dir,
        plans=plans,
        dataset_json=dataset,
        weights_per_fold=weights_per_fold,
        mirroring_axes=(0, 1, 2),
    )
    return model_dir


def spine_phantom(*, shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic CT of a trunk section: (image in HU as int16, bone mask), shape (I, J, K) in RAS+.

    Air around an elliptic body of soft tissue and fat; a column of vertebral bodies (cancellous
    ~250 HU inside a ~700 HU shell) along k, posterior of centre, separated by discs (~80 HU);
    Gaussian noise of 20 HU.
    """
    ni, nj, nk = shape
    i, j, k = np.meshgrid(
        np.arange(ni) - (ni - 1) / 2,
        np.arange(nj) - (nj - 1) / 2,
        np.arange(nk),
        indexing="ij",
    )
    image = np.full(shape, -1000.0, dtype=np.float32)
    body = (i / (0.42 * ni)) ** 2 + (j / (0.36 * nj)) ** 2 < 1
    image[body] = -90.0  # fat
    image[body & ((i / (0.34 * ni)) ** 2 + (j / (0.28 * nj)) ** 2 < 1)] = 40.0  # muscle, organs
    radius = 0.11 * min(ni, nj)
    column = (i / radius) ** 2 + ((j + 0.18 * nj) / radius) ** 2
    height = max(nk // 4, 4)  # vertebral body plus disc, in voxels
    within = k % height
    vertebra = (column < 1) & (within >= 1) & (within < height - 1)
    disc = (column < 1) & ~vertebra
    image[disc] = 80.0
    image[vertebra] = 700.0
    image[vertebra & (column < 0.6) & (within >= 2) & (within < height - 2)] = 250.0
    image += np.random.default_rng(seed).normal(0.0, 20.0, shape).astype(np.float32)
    return np.round(image).astype(np.int16), vertebra


def seeded_weights(
    *,
    plans: dict,
    dataset_json: dict,
    seed: int = 0,
    fit_image: np.ndarray | None = None,
    fit_foreground: np.ndarray | None = None,
    fit_spacing_mm: Sequence[float] | None = None,
) -> dict:
    """The state dict of the network ``plans`` describe, initialised from ``seed``.

    The network is built exactly as nnU-Net builds it when loading (``nnUNetTrainer``'s
    ``build_network_architecture``).

    With ``fit_image`` (HU, (i, j, k) order like
    :meth:`inference.predictor.VertebraPredictor.predict_result`),
    ``fit_foreground`` (bool mask on the same grid) and ``fit_spacing_mm``, the final 1x1x1
    segmentation layer is fitted to that example by weighted least squares on the network's own
    features: background vs foreground, each foreground class a seeded random perturbation of the
    foreground row. The result is a deterministic model, untrained but not arbitrary, that labels
    bright structures; none of its weights is set by hand.
    """
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(CONFIGURATION)
    label_manager = plans_manager.get_label_manager(dataset_json)
    trainer_class = recursive_find_trainer_class_by_name(TRAINER)
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
    return network.state_dict()


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


def use_model(settings, model_dir: Path, *, heartbeat_s: float = 0.1) -> Path:
    """Point Django ``settings`` at ``model_dir`` (fold all, its final checkpoint, labels by
    name) on the CPU in fast mode, with a heartbeat every ``heartbeat_s`` seconds."""
    settings.CTSPINE_NNUNET_MODEL_DIR = str(model_dir)
    settings.CTSPINE_NNUNET_FOLDS = "all"
    settings.CTSPINE_NNUNET_CHECKPOINT = "checkpoint_final.pth"
    settings.CTSPINE_NNUNET_LABEL_MAP = None
    settings.CTSPINE_DEVICE = "cpu"
    settings.CTSPINE_NNUNET_MODE = "fast"
    settings.CTSPINE_JOB_HEARTBEAT_S = heartbeat_s
    return model_dir
