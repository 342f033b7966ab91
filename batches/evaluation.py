"""A closed batch's evaluation: its predictions gathered in one folder of links, then the
benchmark's own ``run_evaluation`` over exactly the batch's cases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from batches.models import Batch
from evaluation.evaluate import run_evaluation
from evaluation.models import EvaluationRun
from inference import jobs
from inference.models import SegmentationJob


def predictions_dir(batch: Batch) -> Path:
    """The batch's prediction folder: ``<case id>.nii.gz`` links to its jobs' predictions."""
    return jobs.media_root() / "batches" / str(batch.pk) / "predictions"


def link_predictions(batch: Batch) -> Path:
    """(Re)make the batch's prediction folder from its succeeded jobs; relative links, so the
    media folder can move. Returns the folder."""
    folder = predictions_dir(batch)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for job in batch.jobs().filter(status=SegmentationJob.Status.SUCCEEDED):
        target = jobs.media_path(job.prediction_path)
        os.symlink(os.path.relpath(target, folder), folder / f"{job.title}.nii.gz")
    return folder


def evaluate_batch(batch: Batch) -> EvaluationRun:
    """Table 2 over the batch's predictions, for exactly its cases: a case whose job failed or
    was cancelled counts as a case without prediction. Writes the batch's evaluation heartbeat
    as each case is scored."""

    def beating(results, total):
        for result in results:
            Batch.objects.beat_evaluation(batch.pk)
            yield result

    return run_evaluation(
        link_predictions(batch),
        split=batch.split,
        name=batch.name,
        cases=list(batch.jobs().values_list("title", flat=True)),
        progress=beating,
    )
