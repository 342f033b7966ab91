"""Benchmark of the volume cache against "nibabel loads the .nii.gz and slices it".

Run: .venv/bin/python bench/volume_cache.py [--shape 512 512 500] [--rounds 3]

Makes a smooth body-like int16 CT phantom (air, soft tissue with noise, lungs, a spine) as a
.nii.gz in a temporary directory (nibabel's default gzip level 1, like the dataset's files), then
measures in the same run:

1. full decode: nibabel (stdlib gzip) vs volume_io.read_volume (ISA-L)
2. time to the first PNG tile of an uncached volume: nibabel load + slice vs VolumeCache.get
   (write-behind, and synchronous write)
3. warm slice extraction p50/p95 per plane: the cache's (k, j, i) layout with its sagittal copy
   (and without: the strided fallback until the copy exists) vs a plain (i, j, k) RAS memmap vs a
   block layout, plus the first slice after dropping the files from the page cache
4. whole-volume MIP per plane: first computation vs cached

The machines are noisy (about +-30 %): compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctspine.atomic import atomic_write  # noqa: E402
from ctspine.imaging import display, encode, windowing  # noqa: E402
from ctspine.imaging.volume_io import read_volume  # noqa: E402
from ctspine.volume_cache import VolumeCache, write_sagittal_copy  # noqa: E402

PLANES = display.PLANES


def body_phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-like RAS volume in HU: air outside, a noisy elliptic body, two lungs and a spine."""
    x_n, y_n, z_n = shape
    rng = np.random.default_rng(seed)
    volume = np.empty(shape, dtype=np.int16, order="F")
    x = (np.arange(x_n, dtype=np.float32) - x_n / 2)[:, None]
    y = (np.arange(y_n, dtype=np.float32) - y_n / 2)[None, :]
    for k in range(z_n):
        scale = 1 + 0.1 * np.sin(k / 60)
        body = (x / (0.42 * x_n * scale)) ** 2 + (y / (0.32 * y_n * scale)) ** 2 < 1
        lungs = ((np.abs(x) - 0.18 * x_n) / (0.1 * x_n)) ** 2 + (y / (0.15 * y_n)) ** 2 < 1
        spine = (x / (0.04 * x_n)) ** 2 + ((y + 0.18 * y_n) / (0.04 * y_n)) ** 2 < 1
        plane = np.full((x_n, y_n), -1000, np.float32)
        plane[body] = 40
        plane[lungs & body] = -800
        plane[spine] = 700 + 200 * np.cos(k / 8)
        noise = rng.standard_normal((x_n, y_n), dtype=np.float32)
        plane += noise * np.where(body, 20, 3).astype(np.float32)
        volume[:, :, k] = plane.astype(np.int16)
    return volume


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def render_png(tile: np.ndarray) -> bytes:
    return encode.encode_png(windowing.apply_window(tile, width=1800, level=400))


def settle() -> None:
    """Flush dirty pages of earlier trials so that no trial pays for another's writeback."""
    os.sync()
    time.sleep(0.2)


def nibabel_first_tile(path: Path) -> bytes:
    data = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    return render_png(display.slice_tile(data, plane="axial", index=data.shape[2] // 2))


def cache_first_tile(path: Path, root: Path, *, write_behind: bool) -> tuple[float, float]:
    """(seconds to the first PNG, seconds until the cache file is durable)."""
    cache = VolumeCache(root, max_bytes=1 << 40, write_behind=write_behind)
    start = time.perf_counter()
    volume = cache.get(path)
    render_png(volume.tile(plane="axial", index=volume.shape[2] // 2))
    first = time.perf_counter() - start
    cache.wait()
    return first, time.perf_counter() - start


def build_pencils(stored: np.ndarray, path: Path, block: int = 8) -> float:
    """Write the (k, j, i) volume as (k/b, i/b, j, b, b) blocks (padded); returns seconds."""
    z, y, x = stored.shape
    zp, xp = -(-z // block) * block, -(-x // block) * block
    start = time.perf_counter()
    shape = (zp // block, xp // block, y, block, block)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=stored.dtype, shape=shape)
    for kb in range(zp // block):
        slab = np.zeros((block, y, xp), stored.dtype)
        part = stored[kb * block : (kb + 1) * block]
        slab[: part.shape[0], :, :x] = part
        out[kb] = slab.reshape(block, y, xp // block, block).transpose(2, 1, 0, 3)
    out.flush()
    del out
    return time.perf_counter() - start


def pencil_extractors(pencils: np.ndarray, shape_ras: tuple[int, int, int]) -> dict:
    """Display-oriented tile extraction from the (k/b, i/b, j, b, b) block layout."""
    x, y, z = shape_ras
    block = pencils.shape[-1]

    def axial(k):
        ji = pencils[k // block, :, :, k % block, :].transpose(1, 0, 2).reshape(y, -1)[:, :x]
        return np.ascontiguousarray(ji[::-1, ::-1])

    def coronal(j):
        ki = pencils[:, :, j].transpose(0, 2, 1, 3).reshape(-1, pencils.shape[1] * block)
        return np.ascontiguousarray(ki[:z, :x][::-1, ::-1])

    def sagittal(i):
        kj = pencils[:, i // block, :, :, i % block].transpose(0, 2, 1).reshape(-1, y)
        return np.ascontiguousarray(kj[:z][::-1, ::-1])

    return {"axial": axial, "coronal": coronal, "sagittal": sagittal}


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def slice_times(extract, count: int, rng: np.random.Generator, n: int = 200) -> list[float]:
    extract(count // 2)  # first touch of this process's mapping
    times = []
    for index in rng.integers(0, count, n):
        start = time.perf_counter()
        extract(int(index))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 500))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    shape = tuple(args.shape)
    work = Path(tempfile.mkdtemp(prefix="bench-volume-cache-"))
    try:
        run(work, shape, args.rounds)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, shape: tuple[int, int, int], rounds: int) -> None:
    spacing = (0.78, 0.78, 1.0)
    t, volume = timed(body_phantom, shape)
    source = work / "phantom.nii.gz"
    t_save, _ = timed(nib.save, nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), source)
    raw_mb = volume.nbytes / 1e6
    print(
        f"phantom {shape[0]}x{shape[1]}x{shape[2]} int16: {raw_mb:.0f} MB raw,"
        f" {source.stat().st_size / 1e6:.0f} MB .nii.gz (made in {t:.1f} s, saved in {t_save:.1f} s)"
    )
    del volume

    # 1 + 2. decode and first tile, alternating so that machine noise hits all alike.
    nib_load, ours_decode, nib_tile, wb_tile, wb_durable, sync_tile = [], [], [], [], [], []
    for n in range(rounds):
        settle()
        nib_load.append(timed(lambda: np.asanyarray(nib.load(source).dataobj))[0])
        ours_decode.append(timed(read_volume, source)[0])
        nib_tile.append(timed(nibabel_first_tile, source)[0])
        settle()
        first, durable = cache_first_tile(source, work / f"cache-wb-{n}", write_behind=True)
        wb_tile.append(first)
        wb_durable.append(durable)
        shutil.rmtree(work / f"cache-wb-{n}")
        settle()
        sync_tile.append(cache_first_tile(source, work / f"cache-sync-{n}", write_behind=False)[0])
        if n < rounds - 1:
            shutil.rmtree(work / f"cache-sync-{n}")
    med = statistics.median
    print(f"\n1. full decode of the .nii.gz (median of {rounds})")
    print(f"   nibabel load, stdlib gzip (baseline)     {ms(med(nib_load))}")
    print(
        f"   volume_io.read_volume, ISA-L              {ms(med(ours_decode))}"
        f"   ratio {med(ours_decode) / med(nib_load):.2f}x"
    )
    print("\n2. first axial PNG tile of an uncached volume (bone window, PNG level 1)")
    print(f"   nibabel load + canonical + slice (baseline) {ms(med(nib_tile))}")
    print(
        f"   VolumeCache.get, write-behind            {ms(med(wb_tile))}"
        f"   ratio {med(wb_tile) / med(nib_tile):.2f}x  (file and sagittal copy durable after"
        f" {ms(med(wb_durable))})"
    )
    print(
        f"   VolumeCache.get, synchronous write       {ms(med(sync_tile))}"
        f"   ratio {med(sync_tile) / med(nib_tile):.2f}x"
    )

    # 3. warm slice extraction: the cache's layout vs alternatives, all memmapped once.
    cache_root = work / f"cache-sync-{rounds - 1}"
    cache_file = next((cache_root / "volumes").glob("*/volume.npy"))
    stored = np.load(cache_file, mmap_mode="r")
    plain_path = work / "plain_ijk.npy"
    np.save(plain_path, np.ascontiguousarray(stored.T))  # plain (i, j, k) C order
    t_sag, _ = timed(atomic_write, work / "sagittal.npy", partial(write_sagittal_copy, stored))
    pencil_path = work / "pencils.npy"
    t_pencil = build_pencils(stored, pencil_path)
    shape_ras = stored.shape[::-1]
    del stored
    cold = {}
    for plane in PLANES:  # before these files are mapped: mapped pages stay in the page cache
        for name, path, storage_to_ras in (
            ("plain", plain_path, False),
            ("cache", cache_file, True),
        ):
            drop_from_page_cache(path)
            start = time.perf_counter()
            stored = np.load(path, mmap_mode="r")
            ras_view = stored.T if storage_to_ras else stored
            index = display.slice_count(ras_view.shape, plane=plane) // 3
            np.ascontiguousarray(display.slice_tile(ras_view, plane=plane, index=index))
            cold[name, plane] = time.perf_counter() - start
            del stored, ras_view
    cache = VolumeCache(cache_root, max_bytes=1 << 40)
    cached = cache.get(source)
    assert cached.sagittal is not None, "no sagittal copy: is the volume below 32 MiB?"
    plain = np.load(plain_path, mmap_mode="r")
    pencils = np.load(pencil_path, mmap_mode="r")
    layouts = {
        "plain (i,j,k) memmap (baseline)": {
            p: (lambda i, p=p: np.ascontiguousarray(display.slice_tile(plain, plane=p, index=i)))
            for p in PLANES
        },
        "cache (k,j,i) + sagittal copy (chosen)": {
            p: (lambda i, p=p: np.ascontiguousarray(cached.tile(plane=p, index=i))) for p in PLANES
        },
        "cache without its sagittal copy": {
            "sagittal": lambda i: np.ascontiguousarray(
                display.slice_tile(cached.data, plane="sagittal", index=i)
            ),
        },
        "(k/8,i/8,j,8,8) blocks, one copy": pencil_extractors(pencils, shape_ras),
    }
    print("\n3. slice extraction to a contiguous display-oriented tile, warm page cache")
    rng = np.random.default_rng(0)
    results = {}
    for name, extractors in layouts.items():
        for plane, extract in extractors.items():
            count = display.slice_count(cached.shape, plane=plane)
            reference = cached.tile(plane=plane, index=count // 3)
            assert np.array_equal(extract(count // 3), reference), (name, plane)
            results[name, plane] = percentiles(slice_times(extract, count, rng))
    for plane in PLANES:
        base50, base95 = results["plain (i,j,k) memmap (baseline)", plane]
        for name in layouts:
            if (name, plane) not in results:
                continue
            p50, p95 = results[name, plane]
            print(
                f"   {plane:8s} {name:40s} p50 {p50 * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"
                f"   p50 ratio {p50 / base50:5.2f}x"
            )
    print(
        f"   (writing the sagittal copy took {ms(t_sag)} and {raw_mb:.0f} MB more disk, in the"
        f" background; the block layout {ms(t_pencil)} instead of a plain write, and has no RAS"
        " array view)"
    )
    print("\n   open + first slice after dropping the file from the page cache (one sample each)")
    for plane in PLANES:
        print(f"   {plane:8s} plain {ms(cold['plain', plane])}   cache {ms(cold['cache', plane])}")

    # 4. whole-volume MIP per plane: computed once, then read back.
    print("\n4. whole-volume MIP (display-oriented), first computation vs cached")
    fresh = VolumeCache(cache_root, max_bytes=1 << 40)
    volume = fresh.get(source)
    for plane in PLANES:
        first, _ = timed(fresh.projection, volume, plane=plane)
        again, _ = timed(fresh.projection, volume, plane=plane)
        other = VolumeCache(cache_root, max_bytes=1 << 40)
        from_disk, _ = timed(other.projection, other.get(source), plane=plane)
        print(
            f"   {plane:8s} first {ms(first)}   cached in memory {ms(again)}"
            f"   cached on disk (new process) {ms(from_disk)}   ratio {from_disk / first:.3f}x"
        )


if __name__ == "__main__":
    main()
