from django.core.management.base import BaseCommand

from inference import services
from inference.jobs import stale_after_s


class Command(BaseCommand):
    help = (
        "Re-queue (once) or fail running segmentation jobs whose worker stopped sending"
        " heartbeats, e.g. after a worker machine died. Workers and the job list do this too;"
        " run it from cron where neither runs often."
    )

    def handle(self, *args, **options):
        changed = services.reap_stale_jobs()
        for job_id, status in changed:
            self.stdout.write(f"job {job_id}: {status}")
        if options.get("verbosity", 1):
            self.stdout.write(
                f"{len(changed)} job(s) without a heartbeat for more than {stale_after_s():g} s"
            )
