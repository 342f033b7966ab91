"""System checks of the site's own set-up, run by ``manage.py check``, ``runserver`` and, through
``ctspine_site.wsgi``, by every gunicorn worker at start: a misconfigured server stops with a
message instead of answering 500 on every page."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core import checks
from django.core.files.storage import storages

TAG = "ctspine"


@checks.register(TAG)
def static_files_collected(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """With hashed static file names (production settings), ``collectstatic`` must have run:
    without its manifest every page that links a static file fails."""
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):
        return []
    manifest = Path(settings.STATIC_ROOT) / storage.manifest_name
    if manifest.is_file():
        return []
    return [
        checks.Error(
            f"static files are not collected: {manifest} is missing, so every page would answer"
            " 500",
            hint="Run `python manage.py collectstatic --noinput` with these settings before"
            " starting the server (the Docker image does it when it is built).",
            id="ctspine.E001",
        )
    ]
