"""Common settings. Every environment variable the application reads is read here, with its
documented default (see the configuration table in README.md)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = env("SECRET_KEY", "dev-insecure-key-change-me-for-anything-public")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

# --- CTSpine1K ---------------------------------------------------------------------------------
CTSPINE_DATA_ROOT = Path(env("CTSPINE_DATA_ROOT", str(BASE_DIR / "demo-data"))).resolve()
CTSPINE_CACHE_DIR = Path(env("CTSPINE_CACHE_DIR", str(BASE_DIR / "cache"))).resolve()
# Holds the whole CTSpine1K download once converted (docs/performance.md), so every case can be
# warm; disk is taken only as cases are opened or warm_cache runs.
CTSPINE_CACHE_MAX_GB = float(env("CTSPINE_CACHE_MAX_GB", "120"))
# Decoded slabs of recently read tiles kept in memory, per server process.
CTSPINE_SLAB_CACHE_MB = int(env("CTSPINE_SLAB_CACHE_MB", "256"))
CTSPINE_MEDIA_DIR = Path(env("CTSPINE_MEDIA_DIR", str(BASE_DIR / "media"))).resolve()
CTSPINE_UPLOAD_MAX_MB = int(env("CTSPINE_UPLOAD_MAX_MB", "2048"))
# Queued plus running segmentation jobs one user may have; workers take users' jobs in turn.
CTSPINE_MAX_ACTIVE_JOBS_PER_USER = int(env("CTSPINE_MAX_ACTIVE_JOBS_PER_USER", "4"))
# The most voxels a job may have once resampled to the model's grid (512 x 512 x 1024 by default).
CTSPINE_MAX_MODEL_VOXELS = int(env("CTSPINE_MAX_MODEL_VOXELS", str(512 * 512 * 1024)))
CTSPINE_TASKS_BACKEND = env("CTSPINE_TASKS_BACKEND", "db")
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Without a configured model, the demo model the project trains on phantoms (committed; every
# result it gives says "demo model ... not for real CT"). A configured model always wins.
DEMO_NNUNET_MODEL_DIR = (
    BASE_DIR / "inference/demo_model/weights/Dataset990_CTSpinePhantomDemo"
    / "nnUNetTrainer__nnUNetPlans__3d_fullres"
)  # fmt: skip
CTSPINE_NNUNET_MODEL_DIR = env("CTSPINE_NNUNET_MODEL_DIR", str(DEMO_NNUNET_MODEL_DIR))
CTSPINE_NNUNET_FOLDS = env("CTSPINE_NNUNET_FOLDS", "all")
CTSPINE_NNUNET_CHECKPOINT = env("CTSPINE_NNUNET_CHECKPOINT", "checkpoint_final.pth")
CTSPINE_NNUNET_LABEL_MAP = env("CTSPINE_NNUNET_LABEL_MAP")
CTSPINE_DEVICE = env("CTSPINE_DEVICE", "auto")
# "accurate" runs nnU-Net's test-time mirroring (8 network passes per tile), "fast" does not.
CTSPINE_NNUNET_MODE = env("CTSPINE_NNUNET_MODE", "accurate")
# The dataset pages and API can require a login; uploads always do.
CTSPINE_PUBLIC_DATASET = env_bool("CTSPINE_PUBLIC_DATASET", True)

# --- Django ------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_tasks",
    "axes",
    "django_tasks_db",
    # The rq backend needs django_rq's queues (RQ_QUEUES below) and its `rqworker` command.
    *(["django_rq", "django_tasks_rq"] if CTSPINE_TASKS_BACKEND == "rq" else []),
    "viewer",
    "inference",
    "evaluation",
    "ctspine_site.apps.SiteConfig",
    "batches",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "ctspine_site.token_auth.TokenAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: answers a locked-out login attempt with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ctspine_site.urls"
WSGI_APPLICATION = "ctspine_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while an ingestion or a worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling (django-axes): a user name from one address is locked out for
# CTSPINE_LOGIN_COOLOFF_MIN minutes after CTSPINE_LOGIN_FAILURES failed attempts.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(env("CTSPINE_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(env("CTSPINE_LOGIN_COOLOFF_MIN", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind CTSPINE_TRUSTED_PROXIES reverse proxies (1: the nginx of docker-compose.yml) the address
# is read from X-Forwarded-For, as the outermost trusted proxy saw it (ctspine_site.client_ip);
# 0 (default): REMOTE_ADDR, for a server that clients reach directly.
CTSPINE_TRUSTED_PROXIES = int(env("CTSPINE_TRUSTED_PROXIES", "0"))
AXES_CLIENT_IP_CALLABLE = "ctspine_site.client_ip.client_ip"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "viewer.api.pagination.CasePagination",
    # Browsers use their session, scripts a token (Authorization: Token <key>). Session first:
    # a request with neither is answered 403, as before tokens existed.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["viewer.permissions.DatasetAccess"],
    "EXCEPTION_HANDLER": "viewer.api.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CTSpine1K viewer API",
    "DESCRIPTION": "Search the CTSpine1K catalog, render slice and projection tiles, segment uploads.",
    "VERSION": "1",
    # Swagger UI served from our own static files: the docs work on an offline lab machine.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

TASKS = {
    "default": (
        {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}
        if CTSPINE_TASKS_BACKEND == "rq"
        else {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}
    )
}
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 6 * 3600}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
