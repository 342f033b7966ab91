from django.apps import AppConfig


class BatchesConfig(AppConfig):
    name = "batches"
    verbose_name = "Batch segmentation of a split"

    def ready(self):
        # Connects the receiver that closes a batch when a worker finishes its last case.
        from batches import tasks  # noqa: F401
