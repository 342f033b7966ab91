"""The segmentation task, run by a worker (``manage.py db_worker``, or ``rqworker`` with the rq
backend) through the Django tasks API.

Each queued job enqueues one task; a task claims the queued job whose turn it is (users take
turns, :meth:`~inference.models.SegmentationJobQuerySet.next_in_turn`), which is often but not
always the job that enqueued it, and returns at once when nothing is queued any more. While the model runs a monitor thread writes the heartbeat and progress every few
seconds and notices a cancel request. The model is loaded once per worker process and reused.
Known failures become a message for the user on the job; unexpected ones are stored the same way
and re-raised, so the tasks backend keeps the traceback for the operator.

Workers also reap jobs whose worker died (:func:`reap_dead_jobs`): before each job, and
periodically while one runs. ``manage.py reap_jobs`` does the same from cron; pages never do.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.dispatch import Signal
from django.utils import timezone
from django_tasks import TaskContext, task
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from ctspine.imaging.volume_io import VolumeError
from inference import jobs, pipeline
from inference.jobs import JobInputError
from inference.model_settings import configured_model, model_error_message
from inference.models import SegmentationJob
from inference.nnunet.config import ModelConfigError
from viewer.tiles.volumes import volume_cache

logger = logging.getLogger(__name__)

# Failures that are about the input or the set-up, not bugs: stored, not re-raised.
EXPECTED_FAILURES = (ModelConfigError, JobInputError, VolumeError, MemoryError)


class JobLost(pipeline.Cancelled):
    """The job is no longer this worker's: the reaper gave it to another (a stall taken for death)."""


@task(takes_context=True)
def segment_job(context: TaskContext, job_id: int) -> str:
    """Segment the queued job whose turn it is (``job_id`` is the job that enqueued this run);
    returns what happened ("succeeded", "failed: ...")."""
    reap_dead_jobs()
    job = SegmentationJob.objects.claim_in_turn(
        worker=worker_name(), task_id=str(context.task_result.id)
    )
    if job is None:
        return "skipped: no job is queued (cancelled, or run by another worker's task)"
    try:
        with JobMonitor(job) as monitor:
            outcome = _run(job, monitor)
    except JobLost:
        return "abandoned: the job was re-queued while this worker was silent"
    except pipeline.Cancelled:
        if job.stop_cancelled():
            shutil.rmtree(jobs.results_dir(job), ignore_errors=True)  # partial results
        return "cancelled"
    except Exception as exc:
        message = readable_error(exc)
        job.fail(message)
        if isinstance(exc, EXPECTED_FAILURES) or _out_of_memory(exc):
            logger.warning("job %s failed: %s", job.pk, message)
            return f"failed: {message}"
        raise
    if not _finish(job, outcome):
        return "abandoned: the job was re-queued while this worker was silent"
    return "succeeded"


def _finish(job: SegmentationJob, outcome: pipeline.SegmentationOutcome) -> bool:
    """Store a finished run's results on the job; False when it was taken away meanwhile."""
    return job.finish(
        prediction_path=str(outcome.prediction_path.resolve().relative_to(jobs.media_root())),
        labels_present=list(outcome.labels_present),
        centroids={
            kind: {str(label): value for label, value in found.items()}
            for kind, found in outcome.centroids.items()
        },
        metrics=outcome.comparison,
        device=outcome.device,
        timings={name: round(seconds, 4) for name, seconds in outcome.timings.items()},
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


#: Sent after :func:`reap_dead_jobs`, so that other apps reap their own dead work at the same
#: moments (the batches app: evaluations whose worker died).
dead_jobs_reaped = Signal()
#: What the backend's row of a task whose worker died shows as its exception (no such class).
WORKER_DIED = "inference.tasks.WorkerDied"


def reap_dead_jobs() -> list[tuple[int, str]]:
    """Re-queue once, then fail, running jobs whose worker stopped sending heartbeats for
    ``CTSPINE_JOB_STALE_AFTER_S``, and fail the database backend's task rows they leave running;
    returns (job id, new status) pairs."""
    changed = SegmentationJob.objects.reap_stale(
        stale_after_s=jobs.stale_after_s(), requeue=enqueue
    )
    fail_orphaned_task_rows(stale_after_s=jobs.stale_after_s())
    dead_jobs_reaped.send(sender=reap_dead_jobs)
    return changed


def fail_orphaned_task_rows(*, stale_after_s: float) -> int:
    """Mark FAILED the ``django_tasks_db`` rows of segmentation tasks still RUNNING, started more
    than ``stale_after_s`` seconds ago, that no running job belongs to: their worker died, and
    the backend itself would show them running forever. Returns how many were failed."""
    stale = stale_task_rows(segment_job, stale_after_s=stale_after_s)
    if stale is None:
        return 0
    # Only now: with another backend the jobs' task ids are not this table's (rq ids, no UUIDs).
    running_tasks = SegmentationJob.objects.filter(
        status=SegmentationJob.Status.RUNNING
    ).values_list("task_id", flat=True)
    orphaned = stale.exclude(id__in=[task_id for task_id in running_tasks if task_id])
    return fail_task_rows(
        orphaned,
        why=f"The worker running this task stopped: no running job has been its for more than"
        f" {stale_after_s:g} s. Its job was re-queued or failed by the reaper.",
    )


def stale_task_rows(task, *, stale_after_s: float):
    """The ``django_tasks_db`` rows of ``task`` still RUNNING that started more than
    ``stale_after_s`` seconds ago (a queryset); None unless the database backend is used."""
    if settings.CTSPINE_TASKS_BACKEND != "db":
        return None
    return DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING,
        task_path=task.module_path,
        started_at__lt=timezone.now() - timedelta(seconds=stale_after_s),
    )


def fail_task_rows(rows, *, why: str) -> int:
    """Mark the task rows ``rows`` FAILED as left behind by a worker that died, with ``why`` as
    their traceback; returns how many."""
    return rows.update(
        status=TaskResultStatus.FAILED,
        finished_at=timezone.now(),
        exception_class_path=WORKER_DIED,
        traceback=why,
    )


def _run(job: SegmentationJob, monitor: JobMonitor) -> pipeline.SegmentationOutcome:
    config = configured_model(job.mode)
    files = jobs.job_files(job)
    started = time.perf_counter()
    predictor = load_predictor(config)
    with monitor.writing:
        job.record_start(
            device=predictor.device_name,
            model={**predictor.info.as_dict(), "mode": job.mode, "mirroring": config.mirroring},
            load_s=time.perf_counter() - started,
        )
    monitor.check()
    return pipeline.segment(
        predictor=predictor,
        image_path=files.image,
        reference_path=files.reference,
        output_dir=jobs.results_dir(job),
        progress=monitor.report,
        check_cancel=monitor.check,
        # Through the viewer's cache: the result page then opens without decoding the files.
        read=volume_cache().read_volume,
    )


def load_predictor(config):
    """The process-wide predictor for ``config`` (loaded on the first job, then reused)."""
    # Imported here rather than at the top: torch and nnU-Net take seconds and hundreds of MB to
    # import (NOTES.md), and the web process imports this module (to enqueue) but never runs one.
    from inference.predictor import get_predictor

    return get_predictor(config)


def enqueue(job_id: int) -> None:
    """Hand a queued job to the tasks backend. A backend that cannot be reached fails the job
    with the reason instead of leaving it queued forever."""
    try:
        result = segment_job.enqueue(job_id)
    except Exception as exc:  # any backend error (Redis down, database locked) is told the user
        logger.exception("could not enqueue segmentation job %s", job_id)
        SegmentationJob.objects.fail_queued(
            job_id,
            f"The job could not be queued ({type(exc).__name__}: {failure_text(exc)}). Is the"
            f" {settings.CTSPINE_TASKS_BACKEND!r} task backend reachable?",
        )
        return
    # Only while queued: once claimed, task_id names the run that holds the job.
    SegmentationJob.objects.filter(pk=job_id, status=SegmentationJob.Status.QUEUED).update(
        task_id=str(result.id)
    )


def readable_error(exc: BaseException) -> str:
    """What to tell the user about a failure."""
    if isinstance(exc, ModelConfigError):
        return model_error_message(exc)
    if isinstance(exc, JobInputError):
        return exc.message
    if isinstance(exc, VolumeError):
        return f"The image could not be read: {exc}"
    if isinstance(exc, MemoryError) or _out_of_memory(exc):
        return (
            "The worker ran out of memory on this scan. Try the 'fast' mode, or a worker with"
            " more (GPU) memory."
        )
    return (
        f"Segmentation failed unexpectedly ({type(exc).__name__}: {failure_text(exc)}). The"
        " worker's log has the details."
    )


def failure_text(exc: BaseException) -> str:
    """The message of ``exc`` as a user may see it: an OSError (or an error it caused) by its
    reason and its file's name, any other message without the server's paths to the data, media
    and cache folders (paths below them stay, relative). The worker's log keeps the full text."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        if cause.filename is None:
            return cause.strerror
        return f"{Path(os.fsdecode(cause.filename)).name}: {cause.strerror}"
    text = str(exc)
    roots = {
        str(Path(folder))
        for name in ("CTSPINE_DATA_ROOT", "CTSPINE_MEDIA_DIR", "CTSPINE_CACHE_DIR", "BASE_DIR")
        if (folder := getattr(settings, name, None))
    }
    for root in sorted(roots, key=len, reverse=True):  # the deepest first
        text = text.replace(f"{root}{os.sep}", "").replace(root, "(server folder)")
    return text


def _out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError is a RuntimeError; matched by message to keep torch out of here.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class JobMonitor:
    """Heartbeat of one running job: a thread that every ``interval`` seconds writes the latest
    progress and stage with the heartbeat, and reads whether a cancel was asked; every
    ``reap_every`` seconds (half the stale limit by default) it also reaps other workers' dead
    jobs, so a worker busy with a long job still notices them.

    The worker thread reports progress to it in memory and takes ``writing`` for its own few
    writes, so the two threads never write at once (on SQLite they would contend for the lock).
    ``check()`` raises :class:`pipeline.Cancelled` or :class:`JobLost` in the worker thread.
    """

    def __init__(
        self,
        job: SegmentationJob,
        interval: float | None = None,
        reap_every: float | None = None,
    ):
        self.job = job
        self.interval = jobs.heartbeat_interval_s() if interval is None else interval
        self.reap_every = jobs.stale_after_s() / 2 if reap_every is None else reap_every
        self._progress, self._stage = 0.0, job.stage
        self.writing = threading.Lock()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"job-{job.pk}-heartbeat", daemon=True
        )

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, fraction: float, stage: str) -> None:
        """Progress (0-1, never going back) and stage name, from the worker thread."""
        self._progress = max(self._progress, min(float(fraction), 1.0))
        self._stage = stage

    def check(self) -> None:
        if self._lost.is_set():
            raise JobLost(f"job {self.job.pk} was taken away from this worker")
        if self._cancel.is_set():
            raise pipeline.Cancelled(f"job {self.job.pk} was cancelled")

    def _loop(self) -> None:
        next_reap = time.monotonic() + self.reap_every
        try:
            while not self._stop.wait(self.interval):
                self._beat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.reap_every
                    self._reap()
        finally:
            connection.close()  # this thread's own connection

    def _reap(self) -> None:
        try:
            with self.writing:
                reap_dead_jobs()
        except DatabaseError:
            logger.warning("reaping dead jobs failed; the next round retries", exc_info=True)

    def _beat(self) -> None:
        try:
            with self.writing:
                close_old_connections()
                progress = round(self._progress, 4)
                mine, cancel = self.job.beat(progress=progress, stage=self._stage)
        except DatabaseError:
            # A missed beat is harmless (the limit is many beats long); the next one may pass.
            logger.warning("heartbeat of job %s not written", self.job.pk, exc_info=True)
            return
        if not mine:
            self._lost.set()
        if cancel:
            self._cancel.set()
