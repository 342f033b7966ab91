"""Fill the volume cache (and thumbnails) ahead of time, so first tiles need no decoding."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import django
from django.contrib.auth.models import AnonymousUser
from django.core.management.base import BaseCommand
from django.template.defaultfilters import filesizeformat
from tqdm import tqdm

from ctspine.dataset.metadata import SPLITS
from ctspine.imaging.volume_io import VolumeError
from viewer.models import Case
from viewer.tiles.case import case_volumes
from viewer.tiles.responses import thumbnail_bytes
from viewer.tiles.urls import Unavailable
from viewer.tiles.volumes import VolumeSet, volume_cache


@dataclass(frozen=True)
class Warmed:
    """One case after warming: ``error`` ("" if none), and the bytes its cache entries take on
    disk beside the bytes of its source files (image and labels)."""

    error: str = ""
    cached_bytes: int = 0
    source_bytes: int = 0


def warm_volumes(volumes: VolumeSet) -> Warmed:
    """Convert one case's image and label into the cache and make its thumbnail. Runs in worker
    processes, so it touches files only, never the database."""
    try:
        cache = volume_cache()
        cached = [cache.get(volumes.image, kind="image")]
        if volumes.labels is not None:
            cached.append(cache.get(volumes.labels, kind="label"))
        thumbnail_bytes(volumes)
        cache.wait()
        return Warmed(
            cached_bytes=sum(_folder_bytes(volume.directory) for volume in cached),
            source_bytes=sum(volume.source.size for volume in cached),
        )
    except (VolumeError, OSError) as exc:
        return Warmed(error=str(exc))


def _folder_bytes(folder: Path) -> int:
    return sum(item.stat().st_size for item in Path(folder).iterdir() if item.is_file())


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
        failures, jobs, warmed = [], [], []
        for case in cases:
            try:
                jobs.append((case.case_id, case_volumes(case.case_id, AnonymousUser())[1]))
            except Unavailable as exc:
                failures.append((case.case_id, str(exc)))
        with tqdm(total=len(jobs), desc="warm cache", unit="case", disable=quiet) as bar:
            for case_id, result in self._warm_all(jobs, workers):
                if result.error:
                    failures.append((case_id, result.error))
                else:
                    warmed.append(result)
                bar.update()
        for case_id, error in failures:
            self.stderr.write(f"{case_id}: {error}")
        if not quiet:
            self.stdout.write(f"{len(warmed)} cases cached, {len(failures)} failed")
            cached = sum(w.cached_bytes for w in warmed)
            source = sum(w.source_bytes for w in warmed)
            if source:
                cache = volume_cache()
                total = sum(entry.size_bytes for entry in cache.entries())
                self.stdout.write(
                    f"on disk: {filesizeformat(cached)} for {filesizeformat(source)} of source files "
                    f"({cached / source:.2f}x); the whole cache holds {filesizeformat(total)} of its "
                    f"{filesizeformat(cache.max_bytes)} budget"
                )

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
