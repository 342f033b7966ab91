from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from viewer.ingest import IngestError, ingest


class Command(BaseCommand):
    help = "Build or update the catalog from a CTSpine1K download (official layout)."

    def add_arguments(self, parser):
        parser.add_argument(
            "root", nargs="?", help="the download's root (default CTSPINE_DATA_ROOT)"
        )
        parser.add_argument("--workers", type=int, default=1, help="parallel reader processes")
        parser.add_argument(
            "--metadata-only",
            action="store_true",
            help="catalog from data_split.txt, Path.csv and the anomaly lists alone",
        )
        parser.add_argument(
            "--headers-only",
            action="store_true",
            help="read image and label headers but not the label voxels (no vertebra statistics)",
        )

    def handle(self, *args, root=None, workers=1, metadata_only=False, headers_only=False, **kw):
        root = Path(root or settings.CTSPINE_DATA_ROOT)
        served = Path(settings.CTSPINE_DATA_ROOT)
        if not metadata_only and root.is_dir() and root.resolve() != served.resolve():
            # The catalog stores paths relative to the root; the server resolves them under
            # CTSPINE_DATA_ROOT, so cases read here would answer "not downloaded" there.
            raise CommandError(
                f"{root} is not the data root the server reads, CTSPINE_DATA_ROOT={served}."
                f" Set CTSPINE_DATA_ROOT={root} for this command and the server, or ingest"
                f" {served}; --metadata-only works from any root"
            )
        quiet = kw.get("verbosity", 1) == 0

        def progress(items):
            return tqdm(items, desc="ingest", unit="case", disable=quiet, file=self.stderr._out)

        try:
            summary = ingest(
                root,
                workers=max(1, workers),
                metadata_only=metadata_only,
                label_stats=not headers_only,
                progress=progress,
            )
        except IngestError as exc:
            raise CommandError(str(exc)) from exc
        for case_id, error in sorted(summary.failures.items()):
            self.stderr.write(f"{case_id}: {error}")
        if not quiet:
            self.stdout.write(summary.line())
