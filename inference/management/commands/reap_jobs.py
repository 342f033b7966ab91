from django.core.management.base import BaseCommand

from inference.jobs import stale_after_s
from inference.tasks import reap_dead_jobs


class Command(BaseCommand):
    help = (
        "Re-queue (once) or fail running segmentation jobs whose worker stopped sending"
        " heartbeats, e.g. after a worker machine died. Workers do this too, before each job and"
        " while one runs; run it from cron so that it also happens while every worker is idle."
    )

    def handle(self, *args, **options):
        changed = reap_dead_jobs()
        for job_id, status in changed:
            self.stdout.write(f"job {job_id}: {status}")
        if options.get("verbosity", 1):
            self.stdout.write(
                f"{len(changed)} job(s) without a heartbeat for more than {stale_after_s():g} s"
            )
