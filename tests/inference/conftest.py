"""Fixtures of the inference tests: a real tiny nnU-Net v2 model folder, settings pointing at it,
small CT files to upload, logged-in clients, and a helper that runs the database task worker.

Uploads go through the real API and pages; jobs go through the real tasks backend (the worker
here is django_tasks_db's own Worker, run in this process until the queue is empty).
"""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.test import Client
from django_tasks_db.management.commands.db_worker import Worker
from rest_framework.test import APIClient

from tests.support.model_folder import build_tiny_model_folder, spine_phantom, use_model

SAMPLE_DICOM = "ts_example_dicom"
SAMPLE_DICOM_LABELS = "ts_example_dicom_vertebrae.nii.gz"
# Labels named like TotalSegmentator's: a model that needs CTSPINE_NNUNET_LABEL_MAP.
FOREIGN_LABELS = ("vertebrae_T11", "vertebrae_T12", "vertebrae_L1", "vertebrae_L2", "sacrum")
FOREIGN_LABEL_MAP = "vertebrae_T11:T11,vertebrae_T12:T12,vertebrae_L1:L1,vertebrae_L2:L2"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real nnU-Net v2 model folder: PlainConvUNet, 64³ patch, 2 mm, labels C1..L6, fold all."""
    return build_tiny_model_folder(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def foreign_model(tmp_path_factory) -> Path:
    """A tiny model whose labels are not CTSpine1K names (mapped by FOREIGN_LABEL_MAP), at 4 mm
    so that a 512 x 512 DICOM series takes 9 tiles rather than 49."""
    return build_tiny_model_folder(
        tmp_path_factory.mktemp("foreign-model"),
        seed=3,
        label_names=FOREIGN_LABELS,
        spacing=(4.0, 4.0, 4.0),
        dataset_id=998,
        dataset_name="Foreign",
    )


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.CTSPINE_MEDIA_DIR = tmp_path / "media"
    return settings.CTSPINE_MEDIA_DIR


@pytest.fixture
def model(settings, media, tiny_model) -> Path:
    """Settings for the tiny model on the CPU, fast mode, quick heartbeats."""
    return use_model(settings, tiny_model)


@pytest.fixture
def no_model(settings, media):
    settings.CTSPINE_NNUNET_MODEL_DIR = None


@pytest.fixture
def alice(client, user) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def bob(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def bob_api(other_user) -> APIClient:
    client = APIClient()
    client.force_login(other_user)
    return client


# --- files to upload ---------------------------------------------------------------------------


def phantom_volumes(shape=(64, 64, 48), seed=1) -> tuple[np.ndarray, np.ndarray]:
    """A spine phantom (int16 HU, RAS) and its ground truth: each vertebral body a level from
    T12 (19) upwards, so the labels are CTSpine1K values on the same grid."""
    image, bone = spine_phantom(shape=shape, seed=seed)
    height = max(shape[2] // 4, 4)  # as spine_phantom stacks its vertebrae
    level = 19 + np.arange(shape[2]) // height
    labels = np.where(bone, level[None, None, :], 0).astype(np.uint8)
    return image, labels


def save_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(
        nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path
    )
    return path


@pytest.fixture
def phantom_files(tmp_path) -> tuple[Path, Path]:
    """``ct.nii.gz`` (stored LPS, 2 mm) and its ground truth ``ct_seg.nii.gz``."""
    image, labels = phantom_volumes()
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])  # LPS storage: the result must come back that way
    flip = (slice(None, None, -1), slice(None, None, -1), slice(None))
    return (
        save_nifti(tmp_path / "ct.nii.gz", image[flip], affine),
        save_nifti(tmp_path / "ct_seg.nii.gz", labels[flip], affine),
    )


@pytest.fixture
def dicom_zip(samples, tmp_path) -> Path:
    """The real DICOM series of the shared samples, zipped in a folder as a user would."""
    path = tmp_path / "series.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((samples / SAMPLE_DICOM).iterdir()):
            archive.write(file, f"{SAMPLE_DICOM}/{file.name}")
    return path


@pytest.fixture
def dicom_labels(samples, tmp_path) -> Path:
    return Path(shutil.copy(samples / SAMPLE_DICOM_LABELS, tmp_path / "series_seg.nii.gz"))


def gz(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


# --- running jobs --------------------------------------------------------------------------------


def run_db_worker() -> None:
    """django_tasks_db's worker, in this process, until the queue is empty (``db_worker --batch``
    without installing signal handlers in the test process)."""
    Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []
