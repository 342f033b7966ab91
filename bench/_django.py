"""Set up Django for a benchmark script: test settings, a fresh SQLite database in a temp dir."""

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CTSPINE_SHARED_DIR", REPO.parent / "shared"))


def setup_django(database_url: str | None = None) -> Path:
    sys.path.insert(0, str(REPO))
    workdir = Path(tempfile.mkdtemp(prefix="ctspine-bench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "ctspine_site.settings.test"
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ.setdefault("CTSPINE_CACHE_DIR", str(workdir / "cache"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return workdir


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return p50, p95
