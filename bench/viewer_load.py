"""Time from opening a case to all four viewer panels drawn, in Chromium, on a full-size phantom.

Run: .venv/bin/python bench/viewer_load.py [--cold 3] [--warm 5] [--fresh 3] [--viewport 1920x1080]

Makes one full-size phantom case (512 x 512 x ~450 voxels) in the official layout in a temporary
directory, ingests it into a temporary SQLite database, serves it with gunicorn (4 workers, test
settings, DEBUG=1 so that WhiteNoise serves the static files from their source folders) on a free
port of 127.0.0.1, and opens /cases/<id>/ in Debian's Chromium (new browser context, so an empty
HTTP cache, each time). The viewer sets ``document.body.dataset.viewsReadyMs`` (ms since the
navigation started) once the axial, sagittal, coronal and projection panels have drawn their first
image. Measured in the same run:

- baseline: nibabel loads the .nii.gz (image; image + label), as the tile server would without
  its volume cache;
- cold: a fresh server with an empty volume cache (the first open decodes the volume);
- warm: the same server again (volume cache filled), new browser context;
- warm, same browser context: tiles from the browser's HTTP cache (immutable, versioned URLs);
- warm, fresh server: a new gunicorn on the filled volume cache (``--fresh`` times), as after a
  restart or ``warm_cache``: nothing decoded in memory yet, the cache's files only.

The machines are noisy (about +-30 %): compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _django import REPO, setup_django

sys.path.insert(0, str(REPO))
from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

TIMINGS_JS = """() => {
  const entries = performance.getEntriesByType("resource");
  const find = (part) => entries.filter((e) => e.name.includes(part));
  const volume = find("/volume/")[0];
  const tiles = [...find("/slices/"), ...find("/projections/")];
  return {
    ready: Number(document.body.dataset.viewsReadyMs),
    volumeStart: volume ? volume.startTime : null,
    volumeMs: volume ? volume.responseEnd - volume.startTime : null,
    slowestTileMs: tiles.length ? Math.max(...tiles.map((e) => e.responseEnd - e.startTime)) : null,
  };
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Server:
    """gunicorn serving the benchmark database and data root, with its own volume cache dir."""

    def __init__(self, *, workdir: Path, data_root: Path, database_url: str, cache_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.test",
            "DATABASE_URL": database_url,
            "CTSPINE_DATA_ROOT": str(data_root),
            "CTSPINE_CACHE_DIR": str(cache_dir),
            "DEBUG": "1",
            "LOG_LEVEL": "WARNING",
        }
        self.log = open(workdir / f"gunicorn-{self.port}.log", "w")  # noqa: SIM115
        gunicorn = Path(os.sys.executable).with_name("gunicorn")
        self.process = subprocess.Popen(
            [str(gunicorn), "ctspine_site.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "4", "--timeout", "300", "--chdir", str(REPO)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(f"{self.url}/api/windows/")
        # Let every worker import Django and the URLconf before anything is measured.
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: wait_for(f"{self.url}/api/windows/"), range(32)))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def open_case(browser, url: str, viewport: dict, context=None) -> dict:
    """Open ``url`` in a new page (of ``context``, or a new context) and wait for four views."""
    own = context is None
    context = context or browser.new_context(viewport=viewport)
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="commit")
    page.wait_for_function("document.body.dataset.viewsReady === 'true'", timeout=300_000)
    timings = page.evaluate(TIMINGS_JS)
    page.close()
    if own:
        context.close()
    if errors:
        raise RuntimeError(f"console errors while opening {url}: {errors}")
    return timings


def nibabel_load(paths: list[Path]) -> float:
    import nibabel as nib

    start = time.perf_counter()
    for path in paths:
        np.asanyarray(nib.load(path).dataobj)
    return (time.perf_counter() - start) * 1000


def row(name: str, samples: list[float], baseline: float | None, note: str = "") -> str:
    p50 = statistics.median(samples)
    ratio = f"{p50 / baseline:.2f}x" if baseline else ""
    spread = f"{min(samples):.0f}–{max(samples):.0f}" if len(samples) > 1 else ""
    return f"| {name} | {p50:.0f} | {spread} | {len(samples)} | {ratio} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", type=int, default=3, help="cold opens (a fresh server each)")
    parser.add_argument("--warm", type=int, default=5, help="warm opens")
    parser.add_argument(
        "--fresh", type=int, default=3, help="opens from a fresh server, cache full"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--viewport", default="1920x1080")
    args = parser.parse_args()
    width, height = (int(v) for v in args.viewport.split("x"))
    viewport = {"width": width, "height": height}

    workdir = setup_django()
    from ctspine.phantom.plan import plan_cases
    from ctspine.phantom.writer import write_dataset
    from viewer.ingest import ingest
    from viewer.models import Case

    data_root = workdir / "CTSpine1K"
    specs = plan_cases(1, seed=args.seed, full_size=True)
    write_dataset(data_root, specs)
    summary = ingest(data_root)
    assert summary.failed == 0, summary.failures
    case = Case.objects.get()
    image, label = data_root / case.image_path, data_root / case.label_path
    print(
        f"case {case.case_id}: {case.dim_x}x{case.dim_y}x{case.dim_z} voxels, "
        f"image {image.stat().st_size / 1e6:.0f} MB, label {label.stat().st_size / 1e6:.1f} MB "
        f"(.nii.gz); Chromium viewport {args.viewport}; gunicorn, 4 workers"
    )
    database_url = os.environ["DATABASE_URL"]

    image_ms = [nibabel_load([image]) for _ in range(5)]
    both_ms = [nibabel_load([image, label]) for _ in range(5)]

    from playwright.sync_api import sync_playwright

    cold, warm, same_context, volume_cold, volume_warm, fresh = [], [], [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        server = None
        try:
            for n in range(args.cold):
                if server:
                    server.stop()
                cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
                server = Server(
                    workdir=workdir, data_root=data_root, database_url=database_url,
                    cache_dir=cache_dir,
                )  # fmt: skip
                url = f"{server.url}/cases/{case.case_id}/"
                timings = open_case(browser, url, viewport)
                cold.append(timings["ready"])
                volume_cold.append(timings["volumeMs"])
                print(f"cold {n + 1}: {timings}")
            for n in range(args.warm):
                timings = open_case(browser, url, viewport)
                warm.append(timings["ready"])
                volume_warm.append(timings["volumeMs"])
                print(f"warm {n + 1}: {timings}")
            context = browser.new_context(viewport=viewport)
            open_case(browser, url, viewport, context)
            for _ in range(args.warm):
                same_context.append(open_case(browser, url, viewport, context)["ready"])
            context.close()
            for n in range(args.fresh):
                server.stop()
                server = Server(
                    workdir=workdir, data_root=data_root, database_url=database_url,
                    cache_dir=cache_dir,
                )  # fmt: skip
                url = f"{server.url}/cases/{case.case_id}/"
                timings = open_case(browser, url, viewport)
                fresh.append(timings["ready"])
                print(f"fresh server {n + 1}: {timings}")
        finally:
            if server:
                server.stop()
            browser.close()

    base = statistics.median(image_ms)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{os.cpu_count()} CPUs, load average {load} (shared machines: compare within a run)")
    print("| open /cases/<id>/ to four views drawn | p50 ms | range | runs | / baseline | note |")
    print("|---|---|---|---|---|---|")
    print(row("baseline: nibabel loads the image .nii.gz", image_ms, base))
    print(row("baseline: nibabel loads image + label", both_ms, base))
    print(
        row(
            "cold: empty volume cache", cold, base,
            f"volume JSON {statistics.median(volume_cold):.0f} ms (decodes the files)",
        )
    )  # fmt: skip
    print(
        row(
            "warm: second open, new browser context", warm, base,
            f"volume JSON {statistics.median(volume_warm):.0f} ms",
        )
    )  # fmt: skip
    print(row("warm, same browser context (HTTP cache)", same_context, base))
    if fresh:
        print(row("warm: fresh server process, volume cache filled", fresh, base))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
