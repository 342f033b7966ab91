from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from batches import services
from evaluation.models import EVALUATED_SPLITS
from inference.model_settings import model_error_message
from inference.models import SegmentationJob
from inference.nnunet.config import ModelConfigError


class Command(BaseCommand):
    help = (
        "Run the configured model over the cases of a split as a batch: one task per case on"
        " the tasks backend, taken by every worker; once the last case has ended, a worker"
        " evaluates the predictions (Table 2) as `evaluate` does. --wait follows it to the end."
    )

    def add_arguments(self, parser):
        parser.add_argument("--split", required=True, choices=list(EVALUATED_SPLITS))
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="catalog filter as on the browse page (repeatable), e.g. anomaly=lumbarization",
        )
        parser.add_argument("--mode", choices=SegmentationJob.Mode.values)
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--user", help="staff user who owns the batch (default: the first superuser)"
        )
        parser.add_argument("--wait", action="store_true", help="follow the batch to its end")
        parser.add_argument("--poll", type=float, default=2.0, help="seconds between checks")

    def handle(self, *args, split, filter, mode, name, user, wait, poll, **options):
        owner = self._owner(user)
        try:
            batch = services.create_batch(
                user=owner,
                split=split,
                filters=services.parse_filters(filter),
                mode=mode,
                name=name,
            )
        except services.BatchError as exc:
            raise CommandError(exc.message) from exc
        except ModelConfigError as exc:
            raise CommandError(model_error_message(exc)) from exc
        total = batch.cases.count()
        self.stdout.write(f"batch {batch.pk} '{batch.name}': {total} cases queued")
        if not wait:
            self.stdout.write(f"see {batch.get_absolute_url()}")
            return
        quiet = options.get("verbosity", 1) == 0
        with tqdm(total=total, unit="case", disable=quiet, file=self.stderr._out) as bar:

            def tick(current):
                progress = current.progress()
                bar.update(progress.ended - bar.n)
                counts = progress.counts
                bar.set_postfix_str(
                    f"{counts['running']} running, {counts['failed']} failed, {current.status}"
                )

            batch = services.watch(batch, poll_s=poll, tick=tick)
        self._report(batch)

    def _owner(self, username):
        users = get_user_model().objects
        if username:
            owner = users.filter(username=username).first()
            if owner is None:
                raise CommandError(f"no user {username!r}")
            return owner
        owner = users.filter(is_superuser=True).order_by("pk").first()
        if owner is None:
            raise CommandError("no superuser: create one (createsuperuser) or give --user")
        return owner

    def _report(self, batch):
        """Print how the batch ended; a batch that did not end done, or any failed case, makes
        the command exit non-zero (scripts running it see that something needs a look)."""
        failed = list(batch.jobs().filter(status=SegmentationJob.Status.FAILED))
        for job in batch.jobs().exclude(status=SegmentationJob.Status.SUCCEEDED):
            self.stderr.write(f"{job.title}: {job.status} {job.error}".rstrip())
        if batch.error:
            self.stderr.write(batch.error)
        progress = batch.progress()
        counts = ", ".join(
            f"{count} {status}" for status, count in progress.counts.items() if count
        )
        self.stdout.write(f"batch {batch.pk}: {batch.get_status_display()} ({counts})")
        if batch.evaluation is not None:
            run = batch.evaluation
            self.stdout.write(
                f"evaluation run {run.pk}: {run.cases_evaluated} of {run.cases_expected} cases"
                f" evaluated; see {batch.evaluation_url()}"
            )
        if batch.status != batch.Status.DONE:
            raise CommandError(f"batch {batch.pk} ended {batch.status}")
        if failed:
            raise CommandError(
                f"batch {batch.pk} is done but {len(failed)} of {progress.total} cases failed:"
                f" {', '.join(job.title for job in failed)}"
            )
