"""Ingestion and search speed.

1. Full-size phantom cases (512x512 slices): cases/s for header-only and label-statistics
   ingestion, beside nibabel's full load of the same files (the baseline, same run).
2. Search latency (p50/p95) of /api/cases/ with three filters and of /api/cases/facets/ over the
   1,005-case catalog of ../shared/ctspine1k, beside an unfiltered first page.

Run: .venv/bin/python bench/ingest.py [--cases 3]
"""

import argparse
import random
import shutil
import time

import numpy as np
from _django import SHARED, percentiles, setup_django


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def bench_ingestion(workdir, n_cases: int) -> None:
    import nibabel as nib

    from ctspine.phantom.plan import plan_cases
    from ctspine.phantom.writer import write_dataset
    from viewer.ingest import ingest
    from viewer.models import Case

    root = workdir / "phantom"
    specs = plan_cases(n_cases, seed=3, full_size=True)
    seconds, _ = timed(write_dataset, root, specs)
    print(f"wrote {n_cases} full-size phantom cases in {seconds:.1f} s")
    images = sorted(root.glob("data/*/*.nii.gz"))
    labels = sorted(root.glob("label/*/*_seg.nii.gz"))
    shapes = {nib.load(p).shape for p in images}
    print(f"shapes: {sorted(shapes)}")

    def nib_load(paths):
        for path in paths:
            np.asanyarray(nib.load(path).dataobj)

    load_images, _ = timed(nib_load, images)
    load_labels, _ = timed(nib_load, labels)
    headers, s1 = timed(ingest, root, label_stats=False)
    Case.objects.all().delete()
    stats, s2 = timed(ingest, root, label_stats=True)
    again, s3 = timed(ingest, root, label_stats=True)
    assert s1.failed == s2.failed == 0, (s1.failures, s2.failures)
    assert s3.unchanged == n_cases, s3.line()
    print()
    print(
        "| ingestion of full-size phantoms | s per case | cases/s | baseline (nibabel full load) | ratio |"
    )
    print("|---|---|---|---|---|")
    per = n_cases
    print(
        f"| header-only | {headers / per:.3f} | {per / headers:.1f} | image+label {(load_images + load_labels) / per:.3f} s | {headers / (load_images + load_labels):.3f}x |"
    )
    print(
        f"| label statistics | {stats / per:.3f} | {per / stats:.2f} | label {load_labels / per:.3f} s | {stats / load_labels:.2f}x (target <= 1.5x) |"
    )
    print(f"| unchanged re-run | {again / per:.4f} | {per / again:.0f} | | |")
    shutil.rmtree(root, ignore_errors=True)


def bench_search(repeats: int) -> None:
    from django.core.management import call_command
    from django.test import Client

    from ctspine.labels import mask_of
    from viewer.models import Case

    Case.objects.all().delete()
    call_command("ingest", str(SHARED / "ctspine1k"), "--metadata-only", verbosity=0)
    # Give every case the geometry and vertebrae an ingested download would have, so the
    # filters work on realistic data (a metadata-only catalog has no labels).
    rng = random.Random(0)
    cases = list(Case.objects.all())
    for case in cases:
        first = rng.choice([1, 8, 12, 15, 17])
        last = rng.choice([19, 22, 23, 24, 24, 24, 25]) if first > 1 else rng.choice([7, 9, 12])
        case.vertebra_mask = mask_of(range(first, last + 1))
        case.downloaded = True
        case.dim_x = case.dim_y = 512
        case.dim_z = rng.randint(42, 1026)
        case.spacing_x = case.spacing_y = round(rng.uniform(0.45, 1.27), 3)
        case.spacing_z = rng.choice([0.625, 0.8, 1.0, 1.25, 2.0, 2.5, 5.0])
    Case.objects.bulk_update(
        cases,
        [
            "vertebra_mask",
            "downloaded",
            "dim_x",
            "dim_y",
            "dim_z",
            "spacing_x",
            "spacing_y",
            "spacing_z",
        ],
    )
    client = Client()
    queries = {
        "baseline: /api/cases/ unfiltered, first page": ("/api/cases/", {}),
        "/api/cases/ source+vertebra+max_z_spacing": (
            "/api/cases/",
            {"source": "COLONOG", "vertebra": "L1,L5", "max_z_spacing": "1.25"},
        ),
        "/api/cases/ anomaly+split+min_slices": (
            "/api/cases/",
            {"anomaly": "any", "split": "train", "min_slices": "300"},
        ),
        "/api/cases/facets/ (no filter)": ("/api/cases/facets/", {}),
        "/api/cases/facets/ source+vertebra+split": (
            "/api/cases/facets/",
            {"source": "COLONOG", "vertebra": "L1", "split": "train"},
        ),
    }
    print()
    print(
        f"| search over {Case.objects.count()} cases ({repeats} requests) | p50 ms | p95 ms | p50 / baseline |"
    )
    print("|---|---|---|---|")
    base = None
    for name, (url, params) in queries.items():
        for _ in range(5):
            client.get(url, params)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.get(url, params)
            samples.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.content
        p50, p95 = percentiles(samples)
        base = base or p50
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base:.2f} |")
    print("targets: search p50 < 25 ms, facets p50 < 50 ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--skip-ingestion", action="store_true")
    args = parser.parse_args()
    workdir = setup_django()
    if not args.skip_ingestion:
        bench_ingestion(workdir, args.cases)
    bench_search(args.repeats)


if __name__ == "__main__":
    main()
