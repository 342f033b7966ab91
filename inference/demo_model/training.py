"""Train the demo model: an nnU-Net v2 ``3d_fullres`` model folder fitted to synthetic phantoms.

The network is nnU-Net's own (``PlainConvUNet`` built by ``get_network_from_plans`` from the
plans this module writes), the data go through nnU-Net's preprocessing steps (``CTNormalization``
with the foreground intensity properties of the training cases, then
``resample_data_or_seg_to_shape`` to the median spacing, order 3 for the image and order 1 for the
labels), and the loss is nnU-Net's default (cross-entropy plus soft Dice without background).
Only the loop is plain PyTorch: random patches (two thirds centred on a vertebra, as nnU-Net
oversamples foreground), left-right flips and small intensity changes, AdamW with a polynomial
learning-rate decay over a wall-clock budget. The result is a model folder that
:class:`inference.predictor.VertebraPredictor` loads like any trained one.

Axis order: phantom volumes are RAS+ ``(i, j, k)``; nnU-Net arrays are ``(k, j, i)`` (what
SimpleITK gives for the same NIfTI file), so plans.json spacing and patch size are ``(k, j, i)``
and the one allowed test-time mirroring axis, left-right, is axis 2.

Training cases come from :func:`ctspine.phantom.plan.plan_cases` with seeds 1, 2, ...; seed 0
(the demo dataset ``make run`` writes) is never trained on, so every demo-dataset case is held out.

Runs without Django: ``python -m inference.demo_model.training OUT`` (what
``manage.py train_demo_model`` calls).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
from nnunetv2.preprocessing.resampling.default_resampling import (
    compute_new_shape,
    resample_data_or_seg_to_shape,
)

from ctspine.labels import LABELS
from ctspine.phantom.anatomy import make_phantom
from ctspine.phantom.plan import PhantomSpec, max_cases, plan_cases
from inference.demo_model import DATASET_NAME, NOTICE
from inference.nnunet.model_folder import (
    CONFIGURATION,
    CTSPINE1K_LABELS,
    TYPICAL_VERTEBRA_CT_INTENSITY,
    dataset_json,
    folder_name,
    plain_conv_unet,
    plans_json,
)
from inference.nnunet.model_folder_torch import build_network, write_model_folder

#: Held-out phantom seed: the demo dataset's (``make_demo_dataset`` plans with seed 0).
HELD_OUT_SEED = 0
#: ``(k, j, i)`` voxels: 96 slices cover the longest phantom field of view at the median spacing,
#: so every patch sees a whole section and can count vertebrae from its ends.
PATCH_SIZE = (96, 80, 80)
FEATURES_PER_STAGE = (12, 24, 48, 96, 128)  # 2.4 M weights: under 5 MB in fp16
N_CLASSES = 1 + len(LABELS)  # background + C1 ... L6, model label value = CTSpine1K value
MIRROR_AXES = (2,)  # left-right only: the spine is not symmetric head to foot or front to back
FOREGROUND_FRACTION = 2 / 3


@dataclass(frozen=True)
class Preprocessed:
    """One case on the model grid: ``data`` (1, k, j, i) float32 normalised, ``seg`` (k, j, i) uint8."""

    case_id: str
    data: np.ndarray
    seg: np.ndarray


# --- plans and the model folder -----------------------------------------------------------------


def training_specs(n_cases: int, *, first_seed: int = 1) -> list[PhantomSpec]:
    """``n_cases`` phantom specs (seeds ``first_seed``, ``first_seed + 1``, ...; 97 per seed),
    stored RAS: the model learns RAS+ canonical arrays, and its plans name nnU-Net's
    NibabelIOWithReorient reader, so the app (and nnU-Net itself) hands it every scan reoriented
    to RAS+ whatever the file's orientation."""
    per_seed = max_cases()
    specs: list[PhantomSpec] = []
    seed = first_seed
    while len(specs) < n_cases:
        take = min(per_seed, n_cases - len(specs))
        specs += [replace(s, orientation="RAS") for s in plan_cases(take, seed=seed)]
        seed += 1
    return specs


def target_spacing_kji(specs: Sequence[PhantomSpec]) -> tuple[float, float, float]:
    """nnU-Net's ``3d_fullres`` target spacing: the median voxel size of the training cases, mm."""
    median = np.median(np.array([s.spacing_mm for s in specs]), axis=0)
    return tuple(round(float(v), 3) for v in median[::-1])


def make_plans(spacing_kji: Sequence[float]) -> dict:
    """plans.json for one ``3d_fullres`` configuration (what nnU-Net 2.8 reads at inference)."""
    n_stages = len(FEATURES_PER_STAGE)
    architecture = plain_conv_unet(
        features_per_stage=FEATURES_PER_STAGE,
        kernel_sizes=[[3, 3, 3]] * n_stages,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
    )
    return plans_json(
        dataset_name=DATASET_NAME,
        architecture=architecture,
        patch_size=PATCH_SIZE,
        spacing=spacing_kji,
        # The phantom's labelled voxels are bone only (their 0.5 percentile is ~230 HU, which
        # would make the CT normalisation erase the discs): the values of real labelled vertebrae.
        intensity_properties=TYPICAL_VERTEBRA_CT_INTENSITY,
        # Trained on RAS+ arrays: the reader that gives nnU-Net exactly those.
        image_reader_writer="NibabelIOWithReorient",
    )


def make_dataset_json(n_training: int) -> dict:
    return dataset_json(
        name=DATASET_NAME, labels=CTSPINE1K_LABELS, n_training=n_training, description=NOTICE
    )


def model_folder(root: Path) -> Path:
    """``root/Dataset990_.../nnUNetTrainer__nnUNetPlans__3d_fullres``: the folder to configure."""
    return Path(root) / DATASET_NAME / folder_name()


def fp16_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict in fp16 on the CPU (nnU-Net copies it into its float32 network on
    loading). The decoder holds the encoder, so its weights appear under two keys; each tensor is
    converted once so that torch.save stores it once."""
    converted: dict[int, torch.Tensor] = {}
    weights = {}
    for key, value in network.state_dict().items():
        if (pointer := value.data_ptr()) not in converted:
            converted[pointer] = value.detach().to("cpu", torch.float16)
        weights[key] = converted[pointer]
    return weights


# --- data ---------------------------------------------------------------------------------------


def render_case(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    """(image HU, labels) of a phantom case in RAS+ ``(i, j, k)`` order."""
    image, label, _affine = make_phantom(replace(spec, orientation="RAS"))
    return image, label


def preprocess(
    image: np.ndarray, label: np.ndarray, spacing_mm: Sequence[float], plans: dict, case_id: str
) -> Preprocessed:
    """nnU-Net's DefaultPreprocessor steps on an RAS+ ``(i, j, k)`` case with spacing in mm.

    Its crop to the non-zero region is left out: CT air is -1000 HU, so it keeps everything.
    """
    configuration = plans["configurations"][CONFIGURATION]
    intensity = plans["foreground_intensity_properties_per_channel"]["0"]
    spacing_kji = list(map(float, spacing_mm))[::-1]
    target = configuration["spacing"]
    data = image.transpose(2, 1, 0)[None].astype(np.float32)
    seg = label.transpose(2, 1, 0)[None].astype(np.int16)
    new_shape = compute_new_shape(data.shape[1:], spacing_kji, target)
    norm = CTNormalization(use_mask_for_norm=False, intensityproperties=intensity)
    data[0] = norm.run(data[0], seg[0])
    data_kwargs = configuration["resampling_fn_data_kwargs"]
    seg_kwargs = configuration["resampling_fn_seg_kwargs"]
    data = resample_data_or_seg_to_shape(data, new_shape, spacing_kji, target, **data_kwargs)
    seg = resample_data_or_seg_to_shape(seg, new_shape, spacing_kji, target, **seg_kwargs)
    return Preprocessed(case_id, data.astype(np.float32), seg[0].astype(np.uint8))


def _prepare(args) -> Preprocessed:
    spec, plans = args
    torch.set_num_threads(1)
    image, label = render_case(spec)
    return preprocess(image, label, spec.spacing_mm, plans, spec.case_id)


def prepare_cases(specs, plans, workers: int) -> list[Preprocessed]:
    jobs = [(spec, plans) for spec in specs]
    if workers <= 1:
        return [_prepare(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_prepare, jobs, chunksize=4))


class PatchSampler:
    """Random training patches of :data:`PATCH_SIZE` with nnU-Net-style foreground oversampling."""

    def __init__(self, cases: Sequence[Preprocessed], rng: np.random.Generator):
        self.cases = [_pad_to_patch(c) for c in cases]
        self.rng = rng
        # Per case, the voxel indices of every labelled voxel, for foreground-centred patches.
        self.foreground = [np.argwhere(c.seg > 0) for c in self.cases]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        data, seg = [], []
        for _ in range(size):
            index = int(self.rng.integers(len(self.cases)))
            case, fg = self.cases[index], self.foreground[index]
            shape = np.array(case.seg.shape)
            patch = np.array(PATCH_SIZE)
            if len(fg) and self.rng.random() < FOREGROUND_FRACTION:
                centre = fg[self.rng.integers(len(fg))]
                start = np.clip(centre - patch // 2, 0, shape - patch)
            else:
                start = np.array(
                    [self.rng.integers(0, s - p + 1) for s, p in zip(shape, patch, strict=True)]
                )
            box = tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))
            d, s = case.data[(slice(None), *box)], case.seg[box]
            if self.rng.random() < 0.5:  # left-right mirror: the labels are not sided
                d, s = d[..., ::-1], s[..., ::-1]
            d = d * self.rng.uniform(0.9, 1.1) + self.rng.uniform(-0.1, 0.1)
            if self.rng.random() < 0.2:
                d = d + self.rng.normal(0, self.rng.uniform(0, 0.1), d.shape)
            data.append(d)
            seg.append(s)
        return np.stack(data).astype(np.float32), np.stack(seg).astype(np.int64)


def _pad_to_patch(case: Preprocessed) -> Preprocessed:
    """Pad with 0 (the normalised foreground mean, as nnU-Net pads at inference) to the patch."""
    pad = [max(0, p - s) for p, s in zip(PATCH_SIZE, case.seg.shape, strict=True)]
    if not any(pad):
        return case
    widths = [(w // 2, w - w // 2) for w in pad]
    return Preprocessed(
        case.case_id, np.pad(case.data, [(0, 0), *widths]), np.pad(case.seg, widths)
    )


# --- training -----------------------------------------------------------------------------------


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's default loss: cross-entropy + (1 - soft Dice over foreground classes, per sample)."""
    ce = torch.nn.functional.cross_entropy(logits, target)
    probs = logits.float().softmax(1)
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    axes = tuple(range(2, logits.ndim))
    intersection = (probs * onehot).sum(axes)
    total = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * intersection + 1e-5) / (total + 1e-5)
    return ce + 1 - dice[:, 1:].mean()


def train(
    out: Path,
    *,
    minutes: float,
    n_cases: int = 96,
    device: str = "cpu",
    batch_size: int = 2,
    learning_rate: float = 2e-3,
    seed: int = 0,
    workers: int = 2,
    held_out: int = 24,
    log: Callable[[str], None] = print,
) -> Path:
    """Train for ``minutes`` of wall-clock time (data preparation not counted) and write the
    model folder under ``out``; returns the folder. A training log ``training_log.txt`` is written
    beside ``dataset.json``, ending with the held-out per-vertebra Dice at the model's spacing."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch_device = torch.device(device)
    if torch_device.type == "cpu":
        torch.set_num_threads(max(1, workers))
    lines: list[str] = []

    def note(text: str) -> None:
        lines.append(text)
        log(text)

    specs = training_specs(n_cases)
    spacing = target_spacing_kji(specs)
    plans = make_plans(spacing)
    note(f"{len(specs)} training cases, target spacing (k, j, i) {spacing} mm, patch {PATCH_SIZE}")
    cases = prepare_cases(specs, plans, workers)
    note(f"prepared in {time.perf_counter() - started:.0f} s on {workers} processes")

    network = build_network(plans, n_classes=N_CLASSES).to(torch_device)
    torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    sampler = PatchSampler(cases, rng)
    budget = minutes * 60
    train_started = time.perf_counter()
    iteration, recent = 0, []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch_device.type == "cuda")
    network.train()
    while (elapsed := time.perf_counter() - train_started) < budget:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * (1 - elapsed / budget) ** 0.9
        data, seg = sampler.batch(batch_size)
        x = torch.from_numpy(data).to(torch_device)
        y = torch.from_numpy(seg).to(torch_device)
        with autocast:
            loss = dice_ce_loss(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        iteration += 1
        recent.append(loss.item())
        if iteration % 50 == 0:
            note(f"iteration {iteration:5d}  {elapsed / 60:5.1f} min  loss {np.mean(recent):.3f}")
            recent = []
    note(
        f"trained {iteration} iterations of batch {batch_size} in {budget / 60:.1f} min on {device}"
    )

    folder = model_folder(out)
    write_model_folder(
        folder,
        plans=plans,
        dataset_json=make_dataset_json(len(specs)),
        weights_per_fold={"all": fp16_weights(network)},
        mirroring_axes=MIRROR_AXES,
    )
    held = [replace(s, orientation="RAS") for s in plan_cases(held_out, seed=HELD_OUT_SEED)]
    report = evaluate(network, prepare_cases(held, plans, workers), torch_device)
    for line in report:
        note(line)
    note(f"total {(time.perf_counter() - started) / 60:.1f} min")
    (folder / "training_log.txt").write_text("\n".join(lines) + "\n")
    return folder


# --- fine-tuning the decoder on the CPU ---------------------------------------------------------

#: The section whose vertebrae a fine-tune samples in every batch (see :func:`fine_tune`).
FOCUS_SECTION = "cervical"


def load_network(folder: Path) -> tuple[torch.nn.Module, dict]:
    """(network in float32 on the CPU, plans) of a model folder written by this module."""
    folder = Path(folder)
    plans = json.loads((folder / "plans.json").read_text())
    network = build_network(plans, n_classes=N_CLASSES)
    checkpoint = torch.load(
        folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=True
    )
    network.load_state_dict({k: v.float() for k, v in checkpoint["network_weights"].items()})
    return network, plans


def fine_tune(
    out: Path,
    *,
    init: Path,
    iterations: int,
    n_cases: int = 388,
    learning_rate: float = 1e-3,
    seed: int = 0,
    workers: int = 2,
    held_out: int = 24,
    log: Callable[[str], None] = print,
) -> Path:
    """Fine-tune the decoder of the model folder ``init`` for ``iterations`` steps and write the
    result under ``out``; returns the folder. Made for the CPU.

    The encoder is frozen, so each training patch goes through it once: one foreground-centred
    patch per case and its left-right mirror, the encoder's outputs kept in fp16, and each step
    trains the decoder only. Every step pairs one :data:`FOCUS_SECTION` patch with one from the
    other sections (every sixth of them), so that the short cervical scans, whose last vertebra
    (C7) the GPU run from scratch left unlabelled, weigh as much as the rest without the rest
    being forgotten. Same loss, optimiser and learning-rate decay as :func:`train`, over steps
    instead of minutes, so a rerun with the same arguments gives the same weights.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(max(1, workers))
    lines: list[str] = []

    def note(text: str) -> None:
        lines.append(text)
        log(text)

    network, plans = load_network(init)
    specs = training_specs(n_cases)
    focus = [s for s in specs if s.section == FOCUS_SECTION]
    rest = [s for s in specs if s.section != FOCUS_SECTION][::6]
    note(f"fine-tuning the decoder of {init}: {len(focus)} {FOCUS_SECTION} + {len(rest)} others")
    cases = prepare_cases(focus + rest, plans, workers)
    network.eval()
    with torch.no_grad():  # each case's patch, then its mirror: focus cases' views first
        views = [view for case in cases for view in _encode(network, case, rng)]
    n_focus = 2 * len(focus)
    note(f"prepared and encoded in {time.perf_counter() - started:.0f} s")

    for parameter in network.encoder.parameters():
        parameter.requires_grad_(False)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=1e-4)
    network.train()
    train_started, recent = time.perf_counter(), []
    for step in range(1, iterations + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * (1 - step / iterations) ** 0.9
        pair = [
            views[int(rng.integers(n_focus))],
            views[n_focus + int(rng.integers(len(views) - n_focus))],
        ]
        skips = [torch.cat([a[0][n] for a in pair]).float() for n in range(len(pair[0][0]))]
        target = torch.cat([a[1] for a in pair])
        loss = dice_ce_loss(network.decoder(skips), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 12)
        optimizer.step()
        recent.append(loss.item())
        if step % 50 == 0:
            minutes = (time.perf_counter() - train_started) / 60
            note(f"step {step:4d}  {minutes:5.1f} min  loss {np.mean(recent):.3f}")
            recent = []
    note(f"fine-tuned {iterations} steps in {(time.perf_counter() - train_started) / 60:.1f} min")

    folder = model_folder(out)
    write_model_folder(
        folder,
        plans=plans,
        dataset_json=make_dataset_json(len(specs)),
        weights_per_fold={"all": fp16_weights(network)},
        mirroring_axes=MIRROR_AXES,
    )
    held = [replace(s, orientation="RAS") for s in plan_cases(held_out, seed=HELD_OUT_SEED)]
    for line in evaluate(network, prepare_cases(held, plans, workers), torch.device("cpu")):
        note(line)
    note(f"total {(time.perf_counter() - started) / 60:.1f} min")
    (folder / "fine_tuning_log.txt").write_text("\n".join(lines) + "\n")
    return folder


def _encode(network, case: Preprocessed, rng: np.random.Generator) -> list[tuple]:
    """The encoder's outputs (fp16) and the labels of one foreground-centred patch of ``case``
    and of its left-right mirror."""
    padded = _pad_to_patch(case)
    shape, patch = np.array(padded.seg.shape), np.array(PATCH_SIZE)
    foreground = np.argwhere(padded.seg > 0)
    centre = foreground[rng.integers(len(foreground))]
    start = np.clip(centre - patch // 2, 0, shape - patch)
    box = tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))
    data, seg = padded.data[(slice(None), *box)], padded.seg[box]
    views = []
    for d, s in ((data, seg), (data[..., ::-1], seg[..., ::-1])):
        skips = network.encoder(torch.from_numpy(np.ascontiguousarray(d))[None])
        labels = torch.from_numpy(np.ascontiguousarray(s)).long()[None]
        views.append(([skip.half() for skip in skips], labels))
    return views


# --- evaluation at the model's spacing ----------------------------------------------------------


@torch.inference_mode()
def predict_preprocessed(network, case: Preprocessed, device: torch.device) -> np.ndarray:
    """Labels on the model grid: patches with half-patch overlap, averaged softmax, argmax."""
    padded = _pad_to_patch(case)
    shape = padded.seg.shape
    starts = [
        sorted({min(s - p, a) for a in range(0, max(1, s - p + 1), p // 2)} | {s - p})
        for s, p in zip(shape, PATCH_SIZE, strict=True)
    ]
    probs = torch.zeros((N_CLASSES, *shape), device=device)
    network.eval()
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                box = (
                    slice(a, a + PATCH_SIZE[0]),
                    slice(b, b + PATCH_SIZE[1]),
                    slice(c, c + PATCH_SIZE[2]),
                )
                x = torch.from_numpy(np.ascontiguousarray(padded.data[(slice(None), *box)]))[None]
                probs[(slice(None), *box)] += network(x.to(device))[0].float().softmax(0)
    network.train()
    labels = probs.argmax(0).cpu().numpy().astype(np.uint8)
    pad = [max(0, p - s) for p, s in zip(PATCH_SIZE, case.seg.shape, strict=True)]
    crop = tuple(slice(w // 2, w // 2 + s) for w, s in zip(pad, case.seg.shape, strict=True))
    return labels[crop]


def evaluate(network, cases: Sequence[Preprocessed], device: torch.device) -> list[str]:
    """Per-vertebra Dice and level check on held-out cases, as lines of a table."""
    per_label: dict[int, list[float]] = {}
    wrong_level = 0
    for case in cases:
        prediction = predict_preprocessed(network, case, device)
        for value in np.unique(case.seg[case.seg > 0]):
            reference = case.seg == value
            predicted = prediction == value
            dice = 2 * (reference & predicted).sum() / (reference.sum() + predicted.sum())
            per_label.setdefault(int(value), []).append(float(dice))
            overlap = np.bincount(prediction[reference], minlength=N_CLASSES)
            overlap[0] = 0
            wrong_level += int(overlap.argmax() != value)
    names = {label.value: label.name for label in LABELS}
    lines = [f"held-out phantom cases (seed {HELD_OUT_SEED}): {len(cases)}", "vertebra  n  Dice"]
    for value in sorted(per_label):
        lines.append(
            f"{names[value]:8s} {len(per_label[value]):2d}  {np.mean(per_label[value]):.3f}"
        )
    all_dice = [d for values in per_label.values() for d in values]
    lines.append(f"mean per-vertebra Dice {np.mean(all_dice):.3f}, min {np.min(all_dice):.3f}")
    lines.append(f"vertebrae labelled as another level: {wrong_level}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run_from_arguments(vars(args))


def add_arguments(parser) -> None:
    parser.add_argument("out", type=Path, help="folder to write the model folder under")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--cases", type=int, default=96, help="phantom training cases")
    parser.add_argument("--device", default="cpu", help='"cpu" or "cuda"')
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=2, help="processes preparing data; CPU threads"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", type=int, default=24, help="held-out cases to evaluate")
    parser.add_argument(
        "--init",
        type=Path,
        help="a model folder to fine-tune (its decoder, on the CPU) instead of training anew",
    )
    parser.add_argument(
        "--steps", type=int, default=400, help="fine-tuning steps (with --init; not --minutes)"
    )


def run_from_arguments(options: dict, log: Callable[[str], None] = print) -> Path:
    if options.get("init") is not None:
        if options["steps"] < 1:
            raise ValueError(f"--steps must be at least 1, got {options['steps']}")
        if not (Path(options["init"]) / "plans.json").is_file():
            raise ValueError(f"--init {options['init']} is not a model folder (no plans.json)")
        return fine_tune(
            Path(options["out"]),
            init=Path(options["init"]),
            iterations=options["steps"],
            n_cases=options["cases"],
            workers=options["workers"],
            seed=options["seed"],
            held_out=options["held_out"],
            log=log,
        )
    if not math.isfinite(options["minutes"]) or options["minutes"] <= 0:
        raise ValueError(f"--minutes must be positive, got {options['minutes']}")
    return train(
        Path(options["out"]),
        minutes=options["minutes"],
        n_cases=options["cases"],
        device=options["device"],
        batch_size=options["batch_size"],
        workers=options["workers"],
        seed=options["seed"],
        held_out=options["held_out"],
        log=log,
    )


if __name__ == "__main__":
    main()
