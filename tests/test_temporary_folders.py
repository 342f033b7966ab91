"""Test runs leave no ``ctspine-test-*`` folders behind: each process that loads the test
settings removes its own folder when it exits; a process a test may kill with SIGKILL (which
runs no atexit) is given its root under the test's own folder (``CTSPINE_TEST_TMP``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.support.task_workers import temporary_root


def test_a_process_with_the_test_settings_removes_its_temporary_folder():
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "root = settings.STATIC_ROOT.parent; (root / 'cache').mkdir(); "
        "(root / 'cache' / 'entry').write_bytes(b'x'); print(root)"
    )
    folder = _folder_printed_by(script)
    assert folder.name.startswith("ctspine-test-")
    assert not folder.exists()


def killed_worker_root(system_tmp: Path, extra_env: dict[str, str]) -> Path:
    """Start a process with the test settings (temporary directory ``system_tmp``), let it write
    into its root, kill it with SIGKILL as the worker tests do; returns its root."""
    script = (
        "import sys, time, django; django.setup(); from django.conf import settings; "
        "root = settings.STATIC_ROOT.parent; (root / 'cache').mkdir(); "
        "(root / 'cache' / 'entry').write_bytes(b'x'); print(root, flush=True); time.sleep(60)"
    )
    system_tmp.mkdir(exist_ok=True)
    env = {name: value for name, value in os.environ.items() if name != "CTSPINE_TEST_TMP"}
    env.update(
        DJANGO_SETTINGS_MODULE="ctspine_site.settings.test", TMPDIR=str(system_tmp), **extra_env
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        root = Path(process.stdout.readline().strip())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert (root / "cache" / "entry").exists()  # nothing of it ran after the kill
    return root


def test_a_process_killed_with_sigkill_leaves_no_folder_in_the_temporary_directory(tmp_path):
    system_tmp = tmp_path / "system-tmp"
    # Left to itself, a killed process leaves its root in the temporary directory ...
    alone = killed_worker_root(system_tmp, {})
    assert alone.parent == system_tmp and alone.name.startswith("ctspine-test-")
    shutil.rmtree(alone)
    # ... so the tests that kill workers give them a root in their own folder, removed with it.
    given = tmp_path / "worker-tmp"
    root = killed_worker_root(system_tmp, temporary_root(given))
    assert root.parent == given and root.name.startswith("ctspine-test-")
    assert list(system_tmp.iterdir()) == []


def test_the_nnunet_v1_test_files_remove_their_path_folder():
    folder = _folder_printed_by(
        "from tests.support.nnunet_v1_files import V1_PATHS; print(V1_PATHS)"
    )
    assert folder.name.startswith("nnunet_v1_paths_")
    assert not folder.exists()


def _folder_printed_by(script: str) -> Path:
    """Run ``script`` in a process with the test settings until it exits; the folder it printed."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])
