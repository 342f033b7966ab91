"""Error messages name paths relative to the data root, never the server's own paths (issue 14,
item 10): a symbolic link out of the root is refused without telling where it points, a file that
cannot be read is named relative to the root with the reason only."""

import errno
import os
from pathlib import Path

import pytest
from django.core.management import call_command

from ctspine.dataset import case_reader
from ctspine.dataset.layout import find_case_files
from tests.viewer.test_ingest import _small_root, _symlink_outside_root
from viewer.models import Case

pytestmark = pytest.mark.django_db


def test_a_link_out_of_the_data_root_is_reported_without_server_paths(tmp_path, client, settings):
    root, specs = _small_root(tmp_path)
    settings.CTSPINE_DATA_ROOT = root
    bad = specs[1]
    _symlink_outside_root(root / bad.image_relpath, bad)
    call_command("ingest", str(root), verbosity=0)
    error = Case.objects.get(case_id=bad.case_id).error
    assert error == (
        f"{bad.image_relpath} leads outside the data root (a symbolic link or '..' points"
        " elsewhere)"
    )
    shown = client.get(f"/api/cases/{bad.case_id}/").content.decode()
    page = client.get(f"/cases/{bad.case_id}/").content.decode()
    for answer in (error, shown, page):
        assert str(tmp_path) not in answer and "elsewhere.nii.gz" not in answer


def test_an_unreadable_case_file_is_reported_relative_to_the_data_root(tmp_path, client, settings):
    # A link to a file that is gone: os.stat's error carries the absolute path of its target.
    root, specs = _small_root(tmp_path)
    settings.CTSPINE_DATA_ROOT = root
    bad = specs[1]
    image = root / bad.image_relpath
    image.unlink()
    image.symlink_to("gone.nii.gz")
    call_command("ingest", str(root), verbosity=0)
    error = Case.objects.get(case_id=bad.case_id).error
    gone = (Path(bad.image_relpath).parent / "gone.nii.gz").as_posix()
    assert error == f"could not read {gone}: No such file or directory"
    shown = client.get(f"/api/cases/{bad.case_id}/").content.decode()
    for answer in (error, shown):
        assert str(tmp_path) not in answer


def test_a_permission_denied_case_file_is_reported_without_server_paths(tmp_path, monkeypatch):
    # Simulated: the tests may run as root, whom no permission stops.
    root, specs = _small_root(tmp_path)
    files = find_case_files(root, specs[0].case_id)
    denied = root / files.image

    def no_permission(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(denied))

    monkeypatch.setattr(case_reader, "file_identity", no_permission)
    reading = case_reader.read_case(root, files, label_stats=False)
    assert reading.error == f"could not read {files.image}: Permission denied"
