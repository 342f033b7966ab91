import time
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ctspine.phantom.plan import plan_cases
from ctspine.phantom.writer import write_dataset


class Command(BaseCommand):
    help = (
        "Write a synthetic phantom CTSpine1K dataset (official layout, real case ids and splits) "
        "into DIR, for demos, tests and benchmarks."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", metavar="DIR", help="dataset root to create or update")
        parser.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
        parser.add_argument(
            "--full-size",
            action="store_true",
            help="512x512 slices, about 500 per case, like real scans (for benchmarks)",
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    def handle(self, *args, directory, cases=24, full_size=False, seed=0, **kw):
        try:
            specs = plan_cases(cases, seed=seed, full_size=full_size)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        quiet = kw.get("verbosity", 1) == 0
        started = time.perf_counter()
        with tqdm(
            total=len(specs), desc="phantom", unit="case", disable=quiet, file=self.stderr._out
        ) as bar:
            write_dataset(Path(directory), specs, progress=lambda spec: bar.update())
        if not quiet:
            self.stdout.write(_summary(specs, directory, time.perf_counter() - started))


def _summary(specs, directory, seconds: float) -> str:
    sources = Counter(spec.source for spec in specs)
    anomalies = Counter(spec.anomaly for spec in specs if spec.anomaly)
    parts = ", ".join(f"{source} {count}" for source, count in sources.items())
    odd = (
        ", ".join(f"{count} {name}" for name, count in sorted(anomalies.items())) or "no anomalies"
    )
    return f"Wrote {len(specs)} phantom cases ({parts}; {odd}) to {directory} in {seconds:.1f} s"
