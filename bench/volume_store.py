"""The compressed volume store against today's raw ``.npy`` cache and a plain nibabel load.

Run: .venv/bin/python bench/volume_store.py [--cases 1] [--layouts lz4,zstd] [--dataset-gb 150]

Writes ``--cases`` full-size phantom cases (``plan_cases(..., full_size=True)``, image + labels as
``.nii.gz``, nibabel's default gzip level) to a temporary directory and measures, per layout, in
the same run (medians; the machines are noisy, about +-30 %, so compare within one run only):

1. disk per case: the store's image + labels as a ratio of the case's ``.nii.gz`` files (and
   today's raw cache: ``.npy`` image + labels, each with its sagittal copy);
2. converting a case into the volume cache (``VolumeCache.get_many`` of image and labels, as the
   tile views and ``warm_cache`` do: decoded in parallel threads, stores written synchronously)
   as a ratio of a plain nibabel load of both files (``np.asanyarray(nib.load(f).dataobj)``);
3. one display tile per plane, p50 over neighbouring slices (stepping through, slab cache on) and
   over scattered slices (every read decodes), against an open ``.npy`` memmap in (k, j, i) order;
4. decoding the whole volume against the same nibabel load.

With ``--dataset-gb`` it extrapolates the whole dataset's store size and conversion time from
the sample's ratios (the dataset is about 150 GB of ``.nii.gz``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctspine.imaging import display  # noqa: E402
from ctspine.imaging.volume_io import read_volume  # noqa: E402
from ctspine.phantom.anatomy import make_phantom  # noqa: E402
from ctspine.phantom.plan import plan_cases  # noqa: E402
from ctspine.volume_cache import DATA_FILE, VolumeCache  # noqa: E402
from ctspine.volume_store import DecodedSlabs, StoreLayout, open_store  # noqa: E402

LAYOUTS = {
    "lz4": StoreLayout(codec="lz4", clevel=1),
    "lz4-b16": StoreLayout(blocks=(16, 16, 16), codec="lz4", clevel=1),
    "lz4-b8": StoreLayout(blocks=(8, 16, 16), codec="lz4", clevel=1),
    "zstd": StoreLayout(codec="zstd", clevel=1),
    "lz4-flat": StoreLayout(chunks=(16, 512, 512), blocks=(4, 128, 128), codec="lz4", clevel=1),
}


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def write_cases(root: Path, count: int) -> list[tuple[Path, Path]]:
    specs = [s for s in plan_cases(24, seed=5, full_size=True) if s.section != "cervical"][:count]
    cases = []
    for spec in specs:
        image, labels, affine = make_phantom(spec)
        paths = (root / f"{spec.seed}_image.nii.gz", root / f"{spec.seed}_labels.nii.gz")
        nib.save(nib.Nifti1Image(image, affine), paths[0])
        nib.save(nib.Nifti1Image(labels, affine), paths[1])
        print(f"case {paths[0].name}: {image.shape} {spec.orientation}", flush=True)
        cases.append(paths)
    return cases


def nibabel_load(paths) -> None:
    for path in paths:
        np.asanyarray(nib.load(path).dataobj)


def convert(paths, root: Path, layout: StoreLayout) -> list[Path]:
    """Convert a case into a fresh volume cache at ``root`` (which must not exist); returns the
    store files."""
    cache = VolumeCache(root, max_bytes=1 << 40, write_behind=False, layout=layout)
    volumes = cache.get_many(list(zip(paths, ("image", "label"), strict=True)))
    return [volume.directory / DATA_FILE for volume in volumes]


def tile_p50(read, count: int, indices) -> float:
    samples = []
    for index in indices(count):
        samples.append(timed(lambda index=index: np.ascontiguousarray(read(index))))
    return p50_ms(samples)


def _tiles(store, plane: str):
    return lambda index: store.tile(plane=plane, index=index)


def neighbours(count: int):
    return range(count // 4, count // 4 + 40)


def scattered(count: int):
    return range(3, count - 3, max(1, count // 20))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1)
    parser.add_argument("--layouts", default="lz4,zstd")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset-gb", type=float, default=150.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ctspine-store-bench-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: Path) -> None:
    cases = write_cases(workdir, args.cases)
    gz_bytes = sum(p.stat().st_size for paths in cases for p in paths)
    nib_s = statistics.median(
        sum(timed(lambda paths=paths: nibabel_load(paths)) for paths in cases) / len(cases)
        for _ in range(args.rounds)
    )
    nib_image_s = statistics.median(
        timed(lambda: nibabel_load(cases[0][:1])) for _ in range(args.rounds)
    )
    print(f"baseline: nibabel load of image + labels {nib_s * 1000:.0f} ms per case")
    print(f"baseline: nibabel load of the image {nib_image_s * 1000:.0f} ms")

    # Today's raw cache: (k, j, i) .npy per volume plus a sagittal copy of the same size.
    raw_dir = workdir / "raw"
    raw_dir.mkdir()
    npy_bytes = 0
    for n, paths in enumerate(cases):
        for path, kind in zip(paths, ("image", "label"), strict=True):
            storage = np.ascontiguousarray(read_volume(path, kind=kind).data.T)
            np.save(raw_dir / f"{n}-{kind}.npy", storage)
            npy_bytes += 2 * storage.nbytes  # + the sagittal copy
    memmap = np.load(raw_dir / "0-image.npy", mmap_mode="r").T  # RAS view
    print(
        f"disk: .nii.gz {gz_bytes / 1e6:.0f} MB for {len(cases)} case(s); "
        f"raw cache with sagittal copies {npy_bytes / 1e6:.0f} MB = {npy_bytes / gz_bytes:.2f}x"
    )
    print()
    print(
        "| layout | disk / .nii.gz | convert / nibabel | whole decode / nibabel image "
        "| axial p50 ms (next / scattered) | coronal | sagittal |"
    )
    print("|---|---|---|---|---|---|---|")
    memmap_row = []
    for plane in display.PLANES:
        count = display.slice_count(memmap.shape, plane=plane)

        def read(index, plane=plane):
            return display.slice_tile(memmap, plane=plane, index=index)

        memmap_row.append(
            f"{tile_p50(read, count, neighbours):.2f} / {tile_p50(read, count, scattered):.2f}"
        )
    print(
        f"| raw .npy memmap (k, j, i) | {npy_bytes / gz_bytes:.2f} | | | {' | '.join(memmap_row)} |"
    )

    for name in args.layouts.split(","):
        layout = LAYOUTS[name]
        out = workdir / name
        out.mkdir()
        convert_s, stores = [], []
        for _ in range(args.rounds):
            for n in range(len(cases)):  # deleting the last round's stores is not converting
                shutil.rmtree(out / str(n), ignore_errors=True)
            start = time.perf_counter()
            stores = [convert(paths, out / str(n), layout) for n, paths in enumerate(cases)]
            convert_s.append((time.perf_counter() - start) / len(cases))
        store_bytes = sum(p.stat().st_size for pair in stores for p in pair)
        image = open_store(stores[0][0], slabs=DecodedSlabs(256 << 20))
        decode_s = statistics.median(timed(image.read) for _ in range(args.rounds))
        row = []
        for plane in display.PLANES:
            count = display.slice_count(image.shape, plane=plane)
            uncached = open_store(stores[0][0])  # no slab cache: every tile decodes its slab
            stepping = tile_p50(_tiles(image, plane), count, neighbours)
            jumping = tile_p50(_tiles(uncached, plane), count, scattered)
            row.append(f"{stepping:.3f} / {jumping:.2f}")
        ratio = statistics.median(convert_s) / nib_s
        print(
            f"| {name} {layout.chunks} {layout.blocks} | {store_bytes / gz_bytes:.2f} "
            f"| {ratio:.2f} ({statistics.median(convert_s) * 1000:.0f} ms) "
            f"| {decode_s / nib_image_s:.2f} ({decode_s * 1000:.0f} ms) | {' | '.join(row)} |",
            flush=True,
        )
        if args.dataset_gb:
            print(
                f"  dataset estimate ({args.dataset_gb:g} GB .nii.gz): store "
                f"{args.dataset_gb * store_bytes / gz_bytes:.0f} GB, conversion "
                f"{args.dataset_gb * 1e9 / gz_bytes * len(cases) * statistics.median(convert_s) / 3600:.1f}"
                " h on one worker"
            )


if __name__ == "__main__":
    main()
