"""Error messages name paths relative to the data root, never the server's own paths (issue 14,
item 10): a symbolic link out of the root is refused without telling where it points."""

import pytest
from django.core.management import call_command

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
