"""Shared fixtures: the real reference data in ../shared, the phantom dataset, clients."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from django.core.management import call_command

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CTSPINE_SHARED_DIR", REPO.parent / "shared"))
CTSPINE_META = SHARED / "ctspine1k"
SAMPLES = SHARED / "samples"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"reference data {path} is absent (tests read it from ../shared beside the repo)"
        )
    return path


@pytest.fixture(scope="session")
def ctspine_meta() -> Path:
    return _require(CTSPINE_META)


@pytest.fixture(scope="session")
def samples() -> Path:
    return _require(SAMPLES)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom CTSpine1K download in the official layout, made once per test run."""
    from ctspine.phantom.plan import plan_cases
    from ctspine.phantom.writer import write_dataset

    root = tmp_path_factory.mktemp("phantom") / "CTSpine1K"
    write_dataset(root, plan_cases(24, seed=7, full_size=False))
    return root


@pytest.fixture
def ingested_phantom(db, phantom_root, settings) -> Path:
    settings.CTSPINE_DATA_ROOT = phantom_root
    call_command("ingest", str(phantom_root), verbosity=0)
    return phantom_root


@pytest.fixture
def user(db, django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password")


@pytest.fixture
def other_user(db, django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password")


def service_listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
        return True
    except OSError:
        return False
