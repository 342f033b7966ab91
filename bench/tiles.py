"""Tile serving speed on a full-size phantom (512 x 512 x ~500, int16).

Prints, beside the baseline "nibabel loads the .nii.gz and slices it" measured in the same run:
- warm tile latency p50/p95 per plane (bone window, overlay on; PNG and WebP) via Django's test
  client, stepping through 60 neighbouring slices;
- warm axial PNG tile p50 with the case row read by the app's hand-written SELECT against the
  ORM's ``Case.objects.only(...).get()`` (the simpler alternative), interleaved;
- time to the first tile of an uncached volume (``--rounds`` times, interleaved with the
  baseline; medians);
- whole-volume MIP: first request and served from cache;
- requests per second of warm tiles from 8 concurrent clients against gunicorn on 127.0.0.1, for
  each ``--servers`` configuration (``sync4``: 4 sync workers; ``gthread2x4``: 2 workers x 4
  threads; any ``syncN`` / ``gthreadNxT``). Each client keeps its connection open where the
  server allows it (gthread), as browsers do.

Run: .venv/bin/python bench/tiles.py [--rounds 3] [--servers sync4,gthread2x4] [--seconds 10]
"""

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
import urllib.request

import nibabel as nib
import numpy as np
from _django import REPO, percentiles, setup_django


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nibabel_load_and_slice(image_path) -> float:
    start = time.perf_counter()
    data = np.asanyarray(nib.as_closest_canonical(nib.load(image_path)).dataobj)
    _ = np.ascontiguousarray(data[:, :, data.shape[2] // 2])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="first-tile trials (medians)")
    parser.add_argument("--servers", default="sync4,gthread2x4", help="gunicorn configurations")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load test")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    workdir = setup_django()
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from ctspine.phantom.plan import plan_cases
    from ctspine.phantom.writer import write_dataset
    from viewer.models import Case
    from viewer.tiles.volumes import volume_cache

    root = workdir / "phantom"
    specs = [s for s in plan_cases(24, seed=5, full_size=True) if s.section != "cervical"][:1]
    write_dataset(root, specs)
    settings.CTSPINE_DATA_ROOT = root
    os.environ["CTSPINE_DATA_ROOT"] = str(root)
    call_command("ingest", str(root), verbosity=0)
    case = Case.objects.get()
    image_path = root / case.image_path
    print(
        f"case {case.case_id}: {case.shape} voxels, {case.spacing} mm, "
        f"{image_path.stat().st_size / 1e6:.0f} MB .nii.gz"
    )

    client = Client()
    base = f"/api/cases/{case.case_id}"

    # Baseline (nibabel loads the file and slices it: what a script without this app does),
    # interleaved with the first tile of an uncached volume (decode image + label, render).
    baselines, firsts = [], []
    for _ in range(args.rounds):
        cache = volume_cache()
        cache.wait()  # background writes of the previous trial
        shutil.rmtree(settings.CTSPINE_CACHE_DIR, ignore_errors=True)
        for folder in ("volumes", "locks"):  # the (open) cache's layout, emptied
            (cache.root / folder).mkdir(parents=True)
        baselines.append(nibabel_load_and_slice(image_path))
        start = time.perf_counter()
        first = client.get(f"{base}/slices/axial/{case.dim_z // 2}.png", {"window": "bone"})
        firsts.append(time.perf_counter() - start)
        assert first.status_code == 200
    baseline = statistics.median(baselines)
    first_tile = statistics.median(firsts)
    print(
        f"baseline: nibabel load + slice {baseline * 1000:.0f} ms "
        f"(median of {', '.join(f'{b * 1000:.0f}' for b in baselines)})"
    )
    volume_cache().wait()  # the stores are written: tiles are warm
    rows = [
        (
            "first tile, uncached volume (decode + label + render), median of "
            + ", ".join(f"{f * 1000:.0f}" for f in firsts),
            first_tile * 1000,
        )
    ]

    print()
    print("| warm tile, bone window, overlay on | p50 ms | p95 ms | p50 / baseline | kB |")
    print("|---|---|---|---|---|")
    counts = {"axial": case.dim_z, "coronal": case.dim_y, "sagittal": case.dim_x}

    def warm_tiles(label, plane, count, ext):
        client.get(f"{base}/slices/{plane}/{count // 2}.{ext}")  # opens the stores
        samples, sizes = [], []
        for index in range(count // 4, count // 4 + 60):
            t = time.perf_counter()
            response = client.get(f"{base}/slices/{plane}/{index}.{ext}", {"window": "bone"})
            samples.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200
            sizes.append(len(response.content))
        p50, p95 = percentiles(samples)
        print(
            f"| {label} | {p50:.1f} | {p95:.1f} | {p50 / (baseline * 1000):.4f} "
            f"| {np.mean(sizes) / 1000:.0f} |"
        )

    for ext in ("png", "webp"):
        for plane, count in counts.items():
            warm_tiles(f"{plane} {ext}", plane, count, ext)
    case_row_lookup(client, base, case.dim_z)

    t = time.perf_counter()
    client.get(f"{base}/projections/coronal.png", {"mode": "mip"})
    mip_first = (time.perf_counter() - t) * 1000
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        client.get(f"{base}/projections/coronal.png", {"mode": "mip", "window": "bone"})
        samples.append((time.perf_counter() - t) * 1000)
    rows.append(("whole-volume coronal MIP with labels, first request", mip_first))
    rows.append(("whole-volume coronal MIP, served from cache (p50)", percentiles(samples)[0]))
    print()
    print("| | ms | ratio to baseline |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.0f} | {ms / (baseline * 1000):.2f}x |")
    print(f"| baseline: nibabel load + slice | {baseline * 1000:.0f} | 1.00x |")

    print()
    for server in args.servers.split(","):
        load_test(case, counts, root, baseline, server, clients=args.clients, seconds=args.seconds)


def orm_case_row(case_id: str):
    """The Case row a tile needs read by the ORM: the simpler alternative to the app's SELECT."""
    from viewer.models import Case
    from viewer.tiles.case import _CASE_FIELDS

    try:
        return Case.objects.only(*_CASE_FIELDS).get(case_id=case_id)
    except Case.DoesNotExist:
        return None


def case_row_lookup(client, base, slices, rounds=5, tiles=60):
    """Warm axial PNG p50 with the app's raw SELECT of the case row vs the ORM's ``.only().get()``,
    rounds interleaved; and the lookups alone (best of 5 x 2000 calls)."""
    from viewer.tiles import case as case_tiles

    raw = case_tiles._case_row
    case_id = base.rstrip("/").rsplit("/", 1)[-1]
    p50s = {"orm": [], "raw": []}
    try:
        for _ in range(rounds):
            for name, lookup in (("orm", orm_case_row), ("raw", raw)):
                case_tiles._case_row = lookup
                samples = []
                for index in range(slices // 4, slices // 4 + tiles):
                    t = time.perf_counter()
                    response = client.get(f"{base}/slices/axial/{index}.png", {"window": "bone"})
                    samples.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200
                p50s[name].append(percentiles(samples)[0])
    finally:
        case_tiles._case_row = raw
    orm_p50, raw_p50 = statistics.median(p50s["orm"]), statistics.median(p50s["raw"])
    alone = {
        name: min(timeit.repeat(lambda f=f: f(case_id), number=2000, repeat=5)) / 2
        for name, f in (("orm", orm_case_row), ("raw", raw))
    }
    print(
        f"| axial png, case row by the ORM (.only().get()) instead of the raw SELECT | "
        f"{orm_p50:.2f} | | {orm_p50 / raw_p50:.3f} x the raw SELECT's {raw_p50:.2f} ms "
        f"(medians of {rounds} interleaved rounds of {tiles} tiles); the lookup alone "
        f"{alone['orm']:.3f} ms vs {alone['raw']:.3f} ms, a difference of "
        f"{(alone['orm'] - alone['raw']) / raw_p50:.0%} of the tile | |"
    )


def gunicorn_options(server: str) -> list[str]:
    """``sync4`` -> 4 sync workers; ``gthread2x4`` -> 2 workers with 4 threads each."""
    if server.startswith("sync"):
        return ["--workers", server[4:]]
    if server.startswith("gthread"):
        workers, threads = server[7:].split("x")
        return ["--workers", workers, "--threads", threads, "--worker-class", "gthread"]
    raise ValueError(f"unknown server configuration {server!r}")


def load_test(case, counts, root, baseline, server, clients=8, seconds=10.0):
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="ctspine_site.settings.test",
        CTSPINE_DATA_ROOT=str(root),
        PYTHONPATH=str(REPO),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "ctspine_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            *gunicorn_options(server),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/cases/{case.case_id}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/volume/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        # every worker opens its memmaps once
        for plane, count in counts.items():
            for _ in range(8):
                urllib.request.urlopen(f"{url}/slices/{plane}/{count // 2}.png").read()
        done, latencies = [], []
        stop = time.perf_counter() + seconds
        path = f"/api/cases/{case.case_id}/slices"

        def run(seed):
            rng = np.random.default_rng(seed)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n, mine = 0, []
            while time.perf_counter() < stop:
                plane = ("axial", "coronal", "sagittal")[n % 3]
                index = int(rng.integers(0, counts[plane]))
                t = time.perf_counter()
                connection.request("GET", f"{path}/{plane}/{index}.png?window=bone")
                response = connection.getresponse()
                response.read()
                assert response.status == 200, response.status
                mine.append((time.perf_counter() - t) * 1000)
                n += 1
            connection.close()
            done.append(n)
            latencies.extend(mine)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        total = sum(done)
        p50, p95 = percentiles(latencies)
        print(
            f"load: {clients} concurrent clients, gunicorn {' '.join(gunicorn_options(server))} "
            f"on 127.0.0.1, {elapsed:.1f} s: {total} tiles, {total / elapsed:.0f} tiles/s "
            f"(target >= 150), latency p50 {p50:.0f} ms / p95 {p95:.0f} ms; the baseline, "
            f"a nibabel load per tile on 2 cores, serves {2 / baseline:.1f} tiles/s"
        )
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
