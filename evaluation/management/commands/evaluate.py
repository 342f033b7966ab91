from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from evaluation import table2
from evaluation.case_metrics import MISSING
from evaluation.evaluate import EvaluationError, run_evaluation
from evaluation.models import EVALUATED_SPLITS
from evaluation.reference_sets import set_aside_phrase
from evaluation.reports import missing_phrase
from evaluation.result_files import notes_path


class Command(BaseCommand):
    help = (
        "Evaluate a folder of predicted label maps against the ground truth, split by split, "
        "store the run, print the paper's Table 2 and write CSV and JSON files."
    )

    def add_arguments(self, parser):
        parser.add_argument("prediction_dir", help="folder of <case>.nii.gz predictions")
        parser.add_argument(
            "--split",
            choices=list(EVALUATED_SPLITS),
            default="all",
            help="all = test_public and test_private (default)",
        )
        parser.add_argument("--name", default="", help="name of the run (default: folder name)")
        parser.add_argument("--workers", type=int, default=1, help="parallel processes")
        parser.add_argument("--tolerance-mm", type=float, default=2.0, help="NSD tolerance (mm)")
        parser.add_argument(
            "--out", help="folder for the CSV and JSON files (default: the prediction folder)"
        )
        parser.add_argument(
            "--skip-missing",
            action="store_true",
            help="leave cases without a prediction out of the tables (default: score them as "
            "empty predictions, Dice 0 for each of their vertebrae)",
        )
        parser.add_argument(
            "--reference",
            metavar="GT_DIR",
            help="score against this folder of ground-truth label maps instead of the catalog "
            "(e.g. label/Verse/ of a CTSpine1K download)",
        )
        parser.add_argument(
            "--set-name",
            default="Test_VerSe",
            help="name of the --reference set (default Test_VerSe: VerSe labels, 25 = L6, "
            "28 = T13 and 26 = sacrum set aside)",
        )

    def handle(self, *args, prediction_dir, split, name, workers, tolerance_mm, out, **options):
        if options["reference"] is None and options["set_name"] != "Test_VerSe":
            raise CommandError("--set-name names a --reference folder; give --reference GT_DIR")
        quiet = options.get("verbosity", 1) == 0

        def progress(items, total):
            bar_file = self.stderr._out
            return tqdm(
                items, total=total, desc="evaluate", unit="case", disable=quiet, file=bar_file
            )

        try:
            run = run_evaluation(
                prediction_dir,
                split=split,
                name=name,
                workers=workers,
                tolerance_mm=tolerance_mm,
                out_dir=out,
                progress=progress,
                skip_missing=options["skip_missing"],
                reference_dir=options["reference"],
                set_name=options["set_name"],
            )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        self._report(run, quiet=quiet)

    def _report(self, run, *, quiet: bool) -> None:
        # Problems go to stderr even when quiet: they are what a script needs to notice.
        for result in run.cases.problems():
            if result.status == MISSING:
                scored = " (scored as an empty prediction)" if result.scored else ""
                self.stderr.write(f"{result.case_id}: no prediction{scored}")
            else:
                self.stderr.write(
                    f"{result.case_id}: {result.get_status_display()}: {result.error}"
                )
        for unmatched in run.unmatched_files:
            self.stderr.write(f"not used: {unmatched['name']} ({unmatched['reason']})")
        if run.error:
            self.stderr.write(run.error)
        if quiet:
            return
        table = table2.split_table(run.cases.as_records(), run.splits)
        self.stdout.write(table2.format_table(table, skip_empty_rows=False))
        self.stdout.write("")
        notes = run.cases.scored().exclude(level_summary=[]).order_by("case_id")
        if notes:
            self.stdout.write("Level errors per case (per-vertebra detail on the run page):")
            for result in notes:
                self.stdout.write(f"  {result.case_id}: {'; '.join(result.level_summary)}")
            self.stdout.write("")
        set_aside = set_aside_phrase(run.summary.get("set_aside", []))
        if set_aside:
            self.stdout.write(
                f"Set aside (not scored as C1-L6): {set_aside}. Background in the ground "
                "truth, and not scored in the prediction either."
            )
            self.stdout.write("")
        self.stdout.write(
            f"run {run.pk} '{run.name}': {run.cases_evaluated} of {run.cases_expected} cases "
            f"evaluated, {missing_phrase(run)}, {run.cases_failed} with a "
            f"grid mismatch or unreadable file, {len(run.unmatched_files)} files not used "
            f"({run.seconds:.1f} s, {run.workers} worker{'s' if run.workers > 1 else ''})"
        )
        if run.table_csv_path:
            table = Path(run.table_csv_path)
            self.stdout.write(f"wrote {table} (its notes: {notes_path(table).name})")
        for path in (run.labels_csv_path, run.json_path):
            if path:
                self.stdout.write(f"wrote {path}")
        self.stdout.write(f"see {run.get_absolute_url()}")
