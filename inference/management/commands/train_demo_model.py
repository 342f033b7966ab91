"""``manage.py train_demo_model OUT [--minutes N]``: train the demo model on synthetic phantoms."""

from django.core.management.base import BaseCommand, CommandError

from inference.demo_model import training


class Command(BaseCommand):
    help = (
        "Train nnU-Net's PlainConvUNet on synthetic phantom cases and write an nnU-Net v2 model "
        "folder under OUT (set CTSPINE_NNUNET_MODEL_DIR to the folder it prints)."
    )

    def add_arguments(self, parser):
        training.add_arguments(parser)

    def handle(self, *args, **options):
        try:
            folder = training.run_from_arguments(options, log=self.stdout.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"model folder: {folder}"))
