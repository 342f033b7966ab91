"""Test runs leave no ``ctspine-test-*`` folders behind: each process that loads the test
settings removes its own folder when it exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_a_process_with_the_test_settings_removes_its_temporary_folder():
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "root = settings.STATIC_ROOT.parent; (root / 'cache').mkdir(); "
        "(root / 'cache' / 'entry').write_bytes(b'x'); print(root)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("ctspine-test-")
    assert not folder.exists()
