"""Seconds from pressing "Segment with nnU-Net" to the result, with the committed demo model, on
this machine's CPU, in the modes ``fast`` and ``accurate``.

Sets up what ``make run`` sets up, in a temporary folder: the 24-case demo dataset (seed 0, never
trained on), a SQLite database, ingestion; then for each mode queues the job of the
"Segment" button (``services.create_job`` for a dataset case) and runs the database task worker
until the queue is empty, in a process of its own as ``make run`` does. Reported: the job's
``finished_at - created_at`` (worker start, model load, read, predict, write, compare), the job's
own timings (``load_s``: a running worker loads the model once), and the per-vertebra Dice.

Run: ``.venv/bin/python bench/demo_segment.py [--case ID]`` from the project root.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/, whose inference.py would shadow the package

from inference.demo_model import MODEL_DIR  # noqa: E402

DEFAULT_CASE = "1.3.6.1.4.1.9328.50.4.0506"  # lumbar, stored LPS, 3.31 x 3.31 x 4.50 mm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", default=DEFAULT_CASE)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-segment-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.dev",
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "CTSPINE_DATA_ROOT": str(work / "demo-data"),
        "CTSPINE_CACHE_DIR": str(work / "cache"),
        "CTSPINE_MEDIA_DIR": str(work / "media"),
        "CTSPINE_NNUNET_MODEL_DIR": str(MODEL_DIR),
        "CTSPINE_DEVICE": "cpu",
    }

    def manage(*words: str) -> None:
        subprocess.run([sys.executable, "manage.py", *words], cwd=REPO, env=env, check=True)

    manage("make_demo_dataset", str(work / "demo-data"), "--cases", "24")
    manage("migrate", "--noinput", "-v", "0")
    manage("ingest", "--workers", "2", "-v", "0")
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from inference import services
    from inference.models import SegmentationJob
    from viewer.models import Case

    user = get_user_model().objects.create_user("bench")
    case = Case.objects.get(case_id=args.case)
    print(f"case {case.case_id}: {case.shape} voxels, {case.spacing} mm")
    for mode in ("fast", "accurate"):
        job = services.create_job(user=user, case=case, mode=mode)
        manage("db_worker", "--queue-name", "default", "--batch", "--no-reload")
        job = SegmentationJob.objects.get(pk=job.pk)
        assert job.status == SegmentationJob.Status.SUCCEEDED, job.error
        elapsed = (job.finished_at - job.created_at).total_seconds()
        dice = [row["dice"] for row in job.metrics["per_label"]]
        timings = ", ".join(f"{k} {v:.1f}" for k, v in job.timings.items())
        print(
            f"{mode:8s}: {elapsed:5.1f} s from Segment to result ({timings}); "
            f"per-vertebra Dice min {min(dice):.3f} mean {sum(dice) / len(dice):.3f}"
        )


if __name__ == "__main__":
    main()
