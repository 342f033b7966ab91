"""Fill the volume cache (and thumbnails) ahead of time, so first tiles need no decoding."""

from concurrent.futures import ProcessPoolExecutor, as_completed

from django.contrib.auth.models import AnonymousUser
from django.core.management.base import BaseCommand
from tqdm import tqdm

from viewer.api.case_tiles import Unavailable, case_volumes
from viewer.imaging.volume_io import VolumeError
from viewer.models import SPLITS, Case
from viewer.tile_service import thumbnail_bytes
from viewer.volume_store import volume_cache


def warm_case(case_id: str) -> tuple[str, str]:
    """Convert one case's image and label into the cache and make its thumbnail.
    Returns (case_id, error or "")."""
    try:
        _, volumes = case_volumes(case_id, AnonymousUser())
        cache = volume_cache()
        cache.get(volumes.image, kind="image")
        if volumes.labels is not None:
            cache.get(volumes.labels, kind="label")
        thumbnail_bytes(volumes)
        cache.wait()
    except (Unavailable, VolumeError, OSError) as exc:
        return case_id, str(exc)
    return case_id, ""


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
        case_ids = list(cases.values_list("case_id", flat=True))
        quiet = options.get("verbosity", 1) == 0
        failures = []
        with tqdm(total=len(case_ids), desc="warm cache", unit="case", disable=quiet) as bar:
            for case_id, error in self._warm_all(case_ids, workers):
                if error:
                    failures.append((case_id, error))
                bar.update()
        for case_id, error in failures:
            self.stderr.write(f"{case_id}: {error}")
        if not quiet:
            self.stdout.write(
                f"{len(case_ids) - len(failures)} cases cached, {len(failures)} failed"
            )

    @staticmethod
    def _warm_all(case_ids, workers):
        if workers <= 1:
            yield from (warm_case(case_id) for case_id in case_ids)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(warm_case, case_id) for case_id in case_ids]
            yield from (future.result() for future in as_completed(futures))
