from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ctspine.dataset.layout import PathOutsideRoot, resolve_inside
from evaluation.nnunet_export import ExportCase, export_dataset
from viewer.models import Case


class Command(BaseCommand):
    help = (
        "Export the downloaded, error-free cases in nnU-Net v2's raw format with the official "
        "split: OUT/Dataset<ID>_<NAME>/ (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "out", help="folder that receives Dataset<ID>_<NAME>/ (e.g. $nnUNet_raw)"
        )
        parser.add_argument("--dataset-id", type=int, default=601)
        parser.add_argument("--name", default="CTSpine1K")
        parser.add_argument("--copy", action="store_true", help="copy files instead of linking")

    def handle(self, *args, out, dataset_id, name, copy, **options):
        verbosity = options.get("verbosity", 1)
        cases, skipped = self._cases(Path(settings.CTSPINE_DATA_ROOT))

        def progress(items):
            return tqdm(items, desc="export", unit="case", disable=verbosity == 0 or not copy,
                        file=self.stderr._out)  # fmt: skip

        try:
            summary = export_dataset(
                cases, out=Path(out), dataset_id=dataset_id, name=name, copy=copy,
                progress=progress,
            )  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        skipped.update(summary.skipped)
        if verbosity == 0:
            return
        how = f"{summary.copied} files copied" if copy else f"{summary.linked} files linked"
        if summary.symlinked:
            how += f" ({summary.symlinked} as symlinks: another file system)"
        if summary.removed:
            how += f", {summary.removed} stale files of an earlier export removed"
        self.stdout.write(
            f"{summary.folder}: "
            + ", ".join(f"{n} {split}" for split, n in summary.exported.items())
            + f"; {how}"
        )
        reasons: dict[str, list[str]] = {}
        for case_id, reason in sorted(skipped.items()):
            reasons.setdefault(reason, []).append(case_id)
        for reason, ids in sorted(reasons.items()):
            example = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            self.stdout.write(f"skipped {len(ids)}: {reason} ({example})")
            if verbosity > 1:
                for case_id in ids:
                    self.stdout.write(f"  {case_id}")

    def _cases(self, root: Path) -> tuple[list[ExportCase], dict[str, str]]:
        """The cases to export and, for the others, why not (one short phrase per reason)."""
        cases, skipped = [], {}
        for case in Case.objects.order_by("case_id"):
            if not case.downloaded:
                skipped[case.case_id] = "not downloaded"
            elif case.error:
                skipped[case.case_id] = "ingestion error (see the case page)"
            else:
                try:
                    image = resolve_inside(root, case.image_path)
                    label = resolve_inside(root, case.label_path) if case.has_label else None
                except PathOutsideRoot:
                    skipped[case.case_id] = "file outside the data root"
                    continue
                cases.append(ExportCase(case.case_id, case.split, image, label))
        return cases, skipped
