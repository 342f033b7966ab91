"""Benchmark a batch over the queue: cases per minute with 1 and with 2 rq worker processes on
this machine, and the per-case overhead of the queue against calling the predictor in a loop.

Same cases (the phantom dataset's test splits), same model, same device, in one run:

- loop (baseline): this process loads the predictor once and calls ``inference.pipeline.segment``
  on each case in turn (read, predict, write in the stored orientation, compare with the ground
  truth): what the batch's tasks do, without the queue;
- queue, N workers: N ``manage.py rqworker`` processes (SimpleWorker, as worker machines run
  them) on the local Redis and PostgreSQL, warmed by a one-case batch (model loaded), then one
  batch of every case; time from the batch's creation to its last case's end (the evaluation
  that follows is not counted), so it includes enqueueing, claiming, heartbeats and idle gaps.

The CPU is shared: two worker processes on a 2-core machine compete with each other (each
PyTorch uses every core) and with anything else running; compare the ratios of one run.
Needs PostgreSQL and Redis; uses its own database (``--database-url``, created when missing)
and Redis database 13.

The variants run in interleaved rounds (``--rounds``) and the medians are compared. Two workers
run once unpinned (each PyTorch takes every core: oversubscribed) and once pinned to one core
each (how CPU workers would be deployed: one per core).

Run: ``.venv/bin/python bench/batch.py [--rounds 2] [--model-dir DIR]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REDIS_URL = "redis://127.0.0.1:6379/13"


def create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def loop_baseline(case_files, workdir: Path) -> list[float]:
    """Seconds per case, the predictor loaded once in this process (first case a warm-up)."""
    from inference import pipeline
    from inference.model_settings import configured_model
    from inference.predictor import get_predictor

    predictor = get_predictor(configured_model("fast"))
    seconds = []
    for index, (case_id, image, label) in enumerate([case_files[0], *case_files]):
        start = time.perf_counter()
        pipeline.segment(
            predictor=predictor,
            image_path=image,
            reference_path=label,
            output_dir=workdir / "loop" / f"{index}-{case_id}",
        )
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def queue_run(workers: int, *, setup, staff, cases: int, log_dir: Path, pin: bool) -> dict:
    """Cases per minute through ``workers`` warm worker processes (``pin``: one CPU each)."""
    from batches import services
    from tests.support.task_workers import start_workers, stop_workers

    processes = start_workers(setup, workers, log_dir=log_dir, pin_cpus=pin)
    try:
        # Warm-up: four train cases, so that every worker has loaded the model.
        warm = services.create_batch(user=staff, split="train", filters={"q": ["liver"]})
        warm = services.watch(warm, poll_s=0.2, tick=lambda batch: None)
        if len(warm.progress().by_worker) < workers:
            print(f"  (warm-up reached {len(warm.progress().by_worker)} of {workers} workers)")
        batch = services.create_batch(user=staff, split="all", name=f"{workers} workers")
        assert batch.cases.count() == cases
        batch = services.watch(batch, poll_s=0.2, tick=lambda batch: None)
    finally:
        stop_workers(processes)
    assert batch.status == "done", batch.error
    wall = (batch.cases_ended_at - batch.created_at).total_seconds()
    runs = [job.duration_s for job in batch.jobs()]
    return {
        "wall_s": wall,
        "per_minute": cases / wall * 60,
        "job_s": statistics.median(runs),
        "by_worker": batch.progress().by_worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/ctspine_batch_bench"
    )
    parser.add_argument("--model-dir", help="an nnU-Net v2 model folder (default: tiny, 4 mm)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ctspine-bench-batch-"))
    create_database(args.database_url)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.support.worker_settings",
        DATABASE_URL=args.database_url,
        CTSPINE_DATA_ROOT=str(workdir / "CTSpine1K"),
        CTSPINE_MEDIA_DIR=str(workdir / "media"),
        CTSPINE_TASKS_BACKEND="rq",
        REDIS_URL=REDIS_URL,
        CTSPINE_DEVICE="cpu",
        CTSPINE_NNUNET_MODE="fast",
    )
    from tests.support.model_folder import build_tiny_model_folder

    model_dir = (
        Path(args.model_dir)
        if args.model_dir
        else build_tiny_model_folder(workdir / "model", seed=5, spacing=(4.0, 4.0, 4.0))
    )
    os.environ["CTSPINE_NNUNET_MODEL_DIR"] = str(model_dir)

    import django

    django.setup()
    for name in ("batches", "inference"):  # their info lines would interleave with the figures
        logging.getLogger(name).setLevel(logging.WARNING)
    import django_rq
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from tests.support.task_workers import WorkerSetup
    from viewer.models import Case

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    django_rq.get_connection("default").flushdb()
    call_command("make_demo_dataset", str(workdir / "CTSpine1K"), cases=24, seed=7, verbosity=0)
    call_command("ingest", str(workdir / "CTSpine1K"), verbosity=0)
    staff = get_user_model().objects.create_user("bench", is_staff=True)
    root = workdir / "CTSpine1K"
    cases = [
        (case.case_id, root / case.image_path, root / case.label_path)
        for case in Case.objects.filter(split__in=("test_public", "test_private")).order_by(
            "case_id"
        )
    ]
    setup = WorkerSetup(
        database_url=args.database_url,
        redis_url=REDIS_URL,
        data_root=root,
        media_dir=workdir / "media",
        model_dir=model_dir,
    )
    print(f"{len(cases)} phantom cases (test_public + test_private), model {model_dir}")
    print(f"CPU cores available: {len(os.sched_getaffinity(0))} (shared with other work)")
    variants = {
        "queue, 1 worker": (1, False),
        "queue, 2 workers": (2, False),
        "queue, 2 workers pinned to 1 core each": (2, True),
    }
    loop_s: list[float] = []  # per case, every round
    per_minute: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):  # interleaved, so that other load hits every variant
        seconds = loop_baseline(cases, workdir / f"round-{round_}")
        loop_s.append(statistics.mean(seconds))
        print(f"round {round_ + 1}: loop in one process {loop_s[-1]:.2f} s per case")
        for name, (workers, pin) in variants.items():
            result = queue_run(
                workers,
                setup=setup,
                staff=staff,
                cases=len(cases),
                log_dir=workdir / f"logs-{round_}-{workers}-{pin}",
                pin=pin,
            )
            per_minute[name].append(result["per_minute"])
            print(
                f"round {round_ + 1}: {name}: {result['per_minute']:.1f} cases/min"
                f" ({result['wall_s']:.1f} s), median job {result['job_s']:.2f} s,"
                f" cases per worker {list(result['by_worker'].values())}"
            )
    loop_case = statistics.median(loop_s)
    rates = {name: statistics.median(values) for name, values in per_minute.items()}
    print(f"\nmedians of {args.rounds} round(s)")
    print(
        f"loop in one process (baseline): {60 / loop_case:.1f} cases/min, {loop_case:.2f} s per case"
    )
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} cases/min, {60 / rate:.2f} s per case")
    queue_case = 60 / rates["queue, 1 worker"]
    print(
        f"queue (1 worker) / loop, time per case: {queue_case / loop_case:.2f}x"
        f" ({queue_case - loop_case:+.2f} s per case)"
    )
    for name in list(variants)[1:]:
        print(f"{name} / 1 worker, cases per minute: {rates[name] / rates['queue, 1 worker']:.2f}x")
    django_rq.get_connection("default").flushdb()


if __name__ == "__main__":
    main()
