"""Production settings: never DEBUG; refuse to start without a long random SECRET_KEY; HTTPS
(redirect and HSTS) when ``CTSPINE_HTTPS`` says the site is served over it."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env, env_bool

# Django's own deployment check asks for at least 50 characters (W009); a shorter key is guessable.
MIN_SECRET_KEY_LENGTH = 50

_secret = os.environ.get("SECRET_KEY", "")
if not _secret:
    raise ImproperlyConfigured("SECRET_KEY must be set in the environment for production settings")
if len(_secret) < MIN_SECRET_KEY_LENGTH or len(set(_secret)) < 5:
    raise ImproperlyConfigured(
        f"SECRET_KEY is {len(_secret)} characters long; production settings need at least"
        f" {MIN_SECRET_KEY_LENGTH} random characters, e.g. from `openssl rand -hex 32`"
    )
DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
STORAGES = {
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
}

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto, set CTSPINE_HTTPS=1: plain HTTP is
# redirected to HTTPS and browsers are told to use HTTPS only (HSTS) for CTSPINE_HSTS_SECONDS.
CTSPINE_HTTPS = env_bool("CTSPINE_HTTPS", False)
if CTSPINE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(env("CTSPINE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CTSPINE_HSTS_INCLUDE_SUBDOMAINS", False)
