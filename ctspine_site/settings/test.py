"""Settings for the test suite: data, cache and uploads in a temporary directory per run."""

import atexit
import shutil
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

_TMP = Path(tempfile.mkdtemp(prefix="ctspine-test-"))
# Every process that loads these settings (the test run, spawned workers) removes its own folder
# when it exits, so test runs leave no ctspine-test-* folders behind.
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
