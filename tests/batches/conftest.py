"""Fixtures of the batch tests: a staff user, the phantom dataset ingested, and a tiny real
nnU-Net model at 4 mm (a phantom case then takes a few tiles, so a batch of cases stays quick)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from tests.support.model_folder import build_tiny_model_folder, use_model


@pytest.fixture(scope="session")
def coarse_model(tmp_path_factory) -> Path:
    return build_tiny_model_folder(
        tmp_path_factory.mktemp("coarse-model"), seed=5, spacing=(4.0, 4.0, 4.0)
    )


@pytest.fixture
def batch_settings(settings, tmp_path, coarse_model, ingested_phantom):
    """The coarse model on the CPU, fast mode, quick heartbeats, media in this test's folder."""
    settings.CTSPINE_MEDIA_DIR = tmp_path / "media"
    use_model(settings, coarse_model, heartbeat_s=0.2)
    return settings


@pytest.fixture
def staff(db, django_user_model):
    return django_user_model.objects.create_user("sam", password="sam-password", is_staff=True)


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client
