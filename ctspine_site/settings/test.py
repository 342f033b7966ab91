"""Settings for the test suite: data, cache and uploads in a temporary directory per run."""

import atexit
import shutil
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

# A test that spawns a process with these settings (a worker it may kill with SIGKILL, which runs
# no atexit) names a folder of its own, under its tmp_path, in CTSPINE_TEST_TMP: the process's
# root goes there and the test's clean-up removes it. Any other process makes its own root and
# removes it when it exits, so test runs leave no ctspine-test-* folders behind.
_PARENT_TMP = env("CTSPINE_TEST_TMP", default="")
if _PARENT_TMP:
    Path(_PARENT_TMP).mkdir(parents=True, exist_ok=True)
    _TMP = Path(tempfile.mkdtemp(prefix="ctspine-test-", dir=_PARENT_TMP))
else:
    _TMP = Path(tempfile.mkdtemp(prefix="ctspine-test-"))
    atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
CTSPINE_CACHE_DIR = Path(env("CTSPINE_CACHE_DIR", str(_TMP / "cache")))
CTSPINE_MEDIA_DIR = Path(env("CTSPINE_MEDIA_DIR", str(_TMP / "media")))
# Tests choose their model (tiny, demo or none) explicitly.
CTSPINE_NNUNET_MODEL_DIR = env("CTSPINE_NNUNET_MODEL_DIR")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_ROOT = _TMP / "static"
STATIC_ROOT.mkdir()
WHITENOISE_AUTOREFRESH = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
