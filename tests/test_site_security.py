"""The site's own defences (issue 14): production settings refuse what would be unsafe or broken
at start, and logins are throttled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework.authtoken.models import Token

from ctspine_site.checks import static_files_collected

REPOSITORY = Path(__file__).resolve().parent.parent
LONG_KEY = "k3y-" + "0123456789abcdef" * 4


def production_settings(**environment) -> subprocess.CompletedProcess:
    """Load the production settings in a fresh interpreter; prints the security settings."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.DEBUG]))"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECRET_KEY", "CTSPINE_HTTPS", "DJANGO_SETTINGS"))
    }
    env.update(DJANGO_SETTINGS_MODULE="ctspine_site.settings.production", **environment)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- 12: SECRET_KEY, HTTPS ------------------------------------------------------------------------


def test_production_refuses_a_short_secret_key():
    started = production_settings(SECRET_KEY="changeme-please")
    assert started.returncode != 0
    assert (
        "SECRET_KEY is 15 characters long; production settings need at least 50 random"
        " characters" in started.stderr
    )


def test_production_without_https_setting_keeps_http():
    started = production_settings(SECRET_KEY=LONG_KEY)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout.splitlines()[-1]) == [False, 0, False]


def test_production_over_https_redirects_and_sends_hsts():
    started = production_settings(SECRET_KEY=LONG_KEY, CTSPINE_HTTPS="1")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout.splitlines()[-1]) == [True, 365 * 24 * 3600, False]


# --- 9: static files not collected ----------------------------------------------------------------


MANIFEST_STORAGE = {
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
}


def test_start_fails_with_a_clear_message_when_static_files_are_not_collected(settings, tmp_path):
    settings.STORAGES = MANIFEST_STORAGE
    settings.STATIC_ROOT = tmp_path / "static"
    [error] = static_files_collected()
    assert error.id == "ctspine.E001"
    assert "static files are not collected" in error.msg
    assert "collectstatic --noinput" in error.hint
    with pytest.raises(SystemCheckError, match="ctspine.E001"):
        call_command("check", fail_level="ERROR")  # what ctspine_site.wsgi runs at start

    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
    assert static_files_collected() == []


def test_development_storage_needs_no_collectstatic(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "nothing-here"
    assert static_files_collected() == []


# --- 12: login throttling -------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_is_locked_after_repeated_failures(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        failed = client.post("/accounts/login/", {"username": "alice", "password": "guess"})
        assert failed.status_code in (200, 429)
    locked = client.post("/accounts/login/", {"username": "alice", "password": "alice-password"})
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    token = client.post("/api/auth-token/", {"username": "alice", "password": "alice-password"})
    # Scripts' way in is throttled alike: the right password gets no token (DRF answers 400).
    assert token.status_code == 400
    assert not Token.objects.exists()
    # Another user from the same address is not locked out.
    other = client.post("/accounts/login/", {"username": "bob", "password": "bob-password"})
    assert other.status_code in (200, 302)
