"""Fill the volume cache (and thumbnails) ahead of time, so first tiles need no decoding."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

import django
from django.contrib.auth.models import AnonymousUser
from django.core.management.base import BaseCommand
from tqdm import tqdm

from ctspine.dataset.metadata import SPLITS
from ctspine.imaging.volume_io import VolumeError
from viewer.models import Case
from viewer.tiles.case import case_volumes
from viewer.tiles.responses import thumbnail_bytes
from viewer.tiles.urls import Unavailable
from viewer.tiles.volumes import VolumeSet, volume_cache


def warm_volumes(volumes: VolumeSet) -> str:
    """Convert one case's image and label into the cache and make its thumbnail; returns the
    error, or "". Runs in worker processes, so it touches files only, never the database."""
    try:
        cache = volume_cache()
        cache.get(volumes.image, kind="image")
        if volumes.labels is not None:
            cache.get(volumes.labels, kind="label")
        thumbnail_bytes(volumes)
        cache.wait()
    except (VolumeError, OSError) as exc:
        return str(exc)
    return ""


class Command(BaseCommand):
    help = "Decode downloaded cases into the volume cache and make their thumbnails."

    def add_arguments(self, parser):
        parser.add_argument("--split", choices=SPLITS, action="append", help="only these splits")
        parser.add_argument("--source", action="append", help="only these sources")
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, split=None, source=None, workers=1, **options):
        cases = Case.objects.downloaded().filter(error="")
        if split:
            cases = cases.filter(split__in=split)
        if source:
            cases = cases.filter(source__in=source)
        quiet = options.get("verbosity", 1) == 0
        failures, jobs = [], []
        for case in cases:
            try:
                jobs.append((case.case_id, case_volumes(case.case_id, AnonymousUser())[1]))
            except Unavailable as exc:
                failures.append((case.case_id, str(exc)))
        with tqdm(total=len(jobs), desc="warm cache", unit="case", disable=quiet) as bar:
            for case_id, error in self._warm_all(jobs, workers):
                if error:
                    failures.append((case_id, error))
                bar.update()
        for case_id, error in failures:
            self.stderr.write(f"{case_id}: {error}")
        if not quiet:
            failed_ids = {case_id for case_id, _ in failures}
            cached = sum(1 for case_id, _ in jobs if case_id not in failed_ids)
            self.stdout.write(f"{cached} cases cached, {len(failures)} failed")

    @staticmethod
    def _warm_all(jobs, workers):
        if workers <= 1:
            yield from ((case_id, warm_volumes(volumes)) for case_id, volumes in jobs)
            return
        # Spawned, not forked: a fork would copy the cache's writer threads and locks mid-state
        # and share the parent's database connection.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=django.setup) as pool:
            futures = {pool.submit(warm_volumes, volumes): case_id for case_id, volumes in jobs}
            yield from ((futures[f], f.result()) for f in as_completed(futures))
