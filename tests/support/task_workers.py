"""Real rq worker processes (``manage.py rqworker``, as a GPU machine runs them) for the
scale-out tests and ``bench/batch.py``: started with the environment a worker machine would
have, stopped (or killed) by their process id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RQ_WORKER = [
    "manage.py",
    "rqworker",
    "--worker-class",
    "rq.worker.SimpleWorker",
    "--job-class",
    "django_tasks_rq.Job",
    "default",
]


def temporary_root(folder: Path) -> dict[str, str]:
    """The environment that gives a process spawned with the test settings its temporary root
    under ``folder``, which the spawning test owns (its tmp_path): a process killed with SIGKILL
    runs no clean-up of its own (see ctspine_site/settings/test.py)."""
    return {"CTSPINE_TEST_TMP": str(folder)}


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker machine is given (see docs/deployment.md): the database, Redis, the data
    root, the media folder, the model; heartbeat and stale limit in seconds."""

    database_url: str
    redis_url: str
    data_root: Path
    media_dir: Path
    model_dir: Path
    heartbeat_s: float = 0.5
    stale_after_s: float = 120.0

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.worker_settings",
            "DATABASE_URL": self.database_url,
            "CTSPINE_TASKS_BACKEND": "rq",
            "REDIS_URL": self.redis_url,
            "CTSPINE_DATA_ROOT": str(self.data_root),
            "CTSPINE_MEDIA_DIR": str(self.media_dir),
            "CTSPINE_NNUNET_MODEL_DIR": str(self.model_dir),
            "CTSPINE_DEVICE": "cpu",
            "CTSPINE_NNUNET_MODE": "fast",
            "CTSPINE_JOB_HEARTBEAT_S": str(self.heartbeat_s),
            "CTSPINE_JOB_STALE_AFTER_S": str(self.stale_after_s),
            "PYTHONUNBUFFERED": "1",
        }


def start_workers(
    setup: WorkerSetup, count: int, *, log_dir: Path, pin_cpus: bool = False
) -> list[subprocess.Popen]:
    """``count`` rq worker processes on the queue ``default``; each one's output goes to
    ``log_dir/worker-<n>.log``, its temporary root under ``log_dir/tmp`` (removed with
    ``log_dir``, even for a worker killed with SIGKILL). A worker's name on the jobs it runs is
    ``host:pid``.
    ``pin_cpus``: worker n runs on CPU n only (modulo the CPUs there are), so its PyTorch uses
    one thread, as one CPU worker per core would be deployed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    workers = []
    for number in range(count):
        pinned = {cpus[number % len(cpus)]} if pin_cpus else None
        with open(log_dir / f"worker-{number}.log", "wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, *RQ_WORKER],
                    cwd=REPO,
                    env={**setup.environment(), **temporary_root(log_dir / "tmp")},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=(lambda cpus=pinned: os.sched_setaffinity(0, cpus))
                    if pinned
                    else None,
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen], *, timeout_s: float = 30.0) -> None:
    """SIGTERM (rq's warm shutdown: the current job ends first), then SIGKILL after
    ``timeout_s``; only these processes, by their id."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def logs(log_dir: Path) -> str:
    """The workers' output, for a failing assertion's message."""
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(log_dir.glob("worker-*.log"))
    )
