"""Scale-out for real: separate rq worker processes (``manage.py rqworker``, as worker machines
run them) on the local Redis and PostgreSQL take the cases of one batch; then a worker is killed
with SIGKILL in the middle of a case and the batch still completes, every case exactly once.

Separate processes cannot share the SQLite test database, so these run only on PostgreSQL:
``DATABASE_URL=postgres://postgres@127.0.0.1:5432/ctspine_batch pytest tests/batches -m postgres``.
"""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import replace

import django_rq
import pytest
from django.db import connection
from django_tasks_rq import Job as RQJob

from batches import services
from batches.models import Batch
from evaluation.case_metrics import OK
from tests.batches.test_batches import TEST_PUBLIC
from tests.conftest import service_listening
from tests.support.task_workers import WorkerSetup, logs, start_workers, stop_workers

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own, emptied by these tests
TIMEOUT_S = 600


@pytest.fixture
def rq_batches(batch_settings, tmp_path):
    """The rq backend on Redis database 14 for this process, and what its workers are given."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: separate worker processes cannot share the SQLite test database"
            " (run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/ctspine_batch)"
        )
    if not service_listening("127.0.0.1", 6379):
        pytest.skip("Redis is not listening on 127.0.0.1:6379: the rq workers need it")
    batch_settings.CTSPINE_TASKS_BACKEND = "rq"
    batch_settings.TASKS = {
        "default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}
    }
    batch_settings.RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600}}
    queue = django_rq.get_queue("default", job_class=RQJob)
    queue.connection.flushdb()
    database = connection.settings_dict
    setup = WorkerSetup(
        database_url=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
        f"/{database['NAME']}",
        redis_url=REDIS_URL,
        data_root=batch_settings.CTSPINE_DATA_ROOT,
        media_dir=batch_settings.CTSPINE_MEDIA_DIR,
        model_dir=batch_settings.CTSPINE_NNUNET_MODEL_DIR,
    )
    yield setup
    queue.connection.flushdb()


def follow(batch: Batch, workers, log_dir, *, each_round=lambda batch: None) -> Batch:
    """``services.watch`` (what ``segment_split --wait`` does) until the batch ends."""
    deadline = time.monotonic() + TIMEOUT_S

    def tick(current):
        each_round(current)
        assert time.monotonic() < deadline, f"batch not done after {TIMEOUT_S} s\n{logs(log_dir)}"
        assert any(w.poll() is None for w in workers), f"every worker exited\n{logs(log_dir)}"

    return services.watch(batch, poll_s=0.5, tick=tick)


def wait_only(batch: Batch, workers, log_dir) -> Batch:
    """Read the batch until it ends, changing nothing: the workers alone close and evaluate it."""
    deadline = time.monotonic() + TIMEOUT_S
    while not batch.is_final:
        assert time.monotonic() < deadline, f"batch not done after {TIMEOUT_S} s\n{logs(log_dir)}"
        assert any(w.poll() is None for w in workers), f"every worker exited\n{logs(log_dir)}"
        time.sleep(0.5)
        batch.refresh_from_db()
    return batch


def name_of(worker) -> str:
    return f"{socket.gethostname()}:{worker.pid}"


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_share_one_batch(rq_batches, staff, tmp_path):
    """Both processes take cases; they alone close the batch and evaluate it (this test only
    reads), every case once."""
    batch = services.create_batch(user=staff, split="all", name="two workers")
    assert batch.cases.count() == 12
    workers = start_workers(rq_batches, 2, log_dir=tmp_path / "logs")
    try:
        batch = wait_only(batch, workers, tmp_path / "logs")
    finally:
        stop_workers(workers)

    assert batch.status == Batch.Status.DONE, f"{batch.error}\n{logs(tmp_path / 'logs')}"
    by_worker = batch.progress().by_worker
    assert set(by_worker) == {name_of(w) for w in workers}, by_worker  # both took cases
    assert sum(by_worker.values()) == 12
    assert set(batch.jobs().values_list("status", "attempts")) == {("succeeded", 1)}
    run = batch.evaluation
    assert (run.cases_expected, run.cases_evaluated, run.cases_missing) == (12, 12, 0)


@pytest.mark.django_db(transaction=True)
def test_a_batch_completes_when_a_worker_is_killed_mid_case(
    rq_batches, batch_settings, staff, tmp_path
):
    """The killed worker's case is re-queued (by the survivor or by the watching command, both
    reap) and run again by the survivor; no case is lost or counted twice."""
    setup = replace(rq_batches, stale_after_s=4.0)
    batch_settings.CTSPINE_JOB_STALE_AFTER_S = setup.stale_after_s  # this process reaps too
    batch = services.create_batch(user=staff, split="test_public", name="one worker killed")
    workers = start_workers(setup, 2, log_dir=tmp_path / "logs")
    killed = {}

    def kill_one_mid_case(current):
        if killed:
            return
        job = current.jobs().filter(status="running", stage="predicting").first()
        if job is None:
            return
        victim = next(w for w in workers if name_of(w) == job.worker)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed.update(job=job.pk, worker=job.worker)

    try:
        batch = follow(batch, workers, tmp_path / "logs", each_round=kill_one_mid_case)
    finally:
        stop_workers(workers)

    assert killed, "no case was seen running to kill its worker"
    assert batch.status == Batch.Status.DONE, f"{batch.error}\n{logs(tmp_path / 'logs')}"
    survivor = next(name_of(w) for w in workers if name_of(w) != killed["worker"])
    job = batch.jobs().get(pk=killed["job"])
    assert (job.status, job.attempts, job.worker) == ("succeeded", 2, survivor)
    assert f"The worker {killed['worker']} stopped responding" in job.notes[0]
    assert set(batch.jobs().values_list("status", flat=True)) == {"succeeded"}
    run = batch.evaluation
    results = list(run.cases.values_list("case_id", "status"))
    assert sorted(results) == [(case_id, OK) for case_id in TEST_PUBLIC]  # each exactly once
    assert run.cases_expected == run.cases_evaluated == 6
