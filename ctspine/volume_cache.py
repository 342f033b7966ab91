"""A disk cache of decoded volumes that serves any slice of any plane without decoding again.

Decoding a CT ``.nii.gz`` is slow; the first :meth:`VolumeCache.get` of a file
decodes it once (:func:`.volume_io.read_volume`, ISA-L gzip) and writes it to the cache; every
later access memory-maps the cached copy.

Layout (one directory per source file and kind, ``<root>/volumes/<key>/``):

- ``volume.npy``: the RAS+ volume stored in (k, j, i) C order, i.e. RAS (i, j, k) in Fortran
  order, exactly how NIfTI stores a RAS volume, so a RAS file is written without any reshuffle and
  ``CachedVolume.data`` is a plain strided RAS view that projections and other code can use.
  Axial and coronal tiles are cheap from it, sagittal ones a strided gather (``bench/volume_cache.py``
  compares it with a plain (i, j, k) memmap and a block layout, which was not taken: it loses the
  RAS array view).
- ``sagittal.npy`` + ``sagittal.json`` (volumes of at least ``sagittal_min_bytes``, images and
  labels alike): every sagittal tile in display orientation, stored (i, row, col) C order, so
  ``sagittal[i]`` *is* the tile, contiguous, instead of a strided gather, once for the image and
  once for the labels (``bench/tiles.py`` serves sagittal tiles with and without it). It doubles
  the entry's disk use and takes a second or two to build for a full-size CT, so it is built in
  the background once ``volume.npy`` is committed, at lowered CPU
  priority; until it exists sagittal tiles come from the strided view. The build reads
  ``volume.npy`` once, checking its CRC-32 on the way (a damaged volume is never copied). ``sagittal.json`` (written last: its commit marker) holds its shape, dtype, byte
  size, CRC-32 and the CRC-32 of the ``volume.npy`` it was made from. A missing, damaged (size,
  shape, dtype, or another volume's) or, with ``verify_checksum``, corrupt copy is ignored and
  rebuilt; it counts in the entry's size for eviction like every file of the entry. A process
  that opened the entry before the copy existed picks it up at its next use (checked at most
  every ``sagittal_poll_s``).
- ``meta.json``: the sidecar written last (it is the commit marker): shape, dtype, affine,
  spacing (mm), intensity range, source identity, data byte size and CRC-32. Its mtime is the
  entry's last use, for LRU eviction.
- ``proj-<mode>-<plane>.npy``: whole-volume projections computed on first request;
  ``labelproj-<image key>-<mode>-<plane>.npy`` (in a label entry): the label tile for that image's
  projection.

The key hashes the source's absolute path, size and mtime_ns (and the kind), so a changed file is
converted again and the stale entry of the same path is removed. Conversions are atomic (temporary
file, fsync, ``os.replace``) and serialised per volume across processes and threads by
``fcntl.flock`` on ``<root>/locks/<key>.lock``: a second process waits and then reuses the result.
A cache file whose size, shape or dtype disagrees with its sidecar is rebuilt on open.

With ``write_behind`` (default) the first :meth:`VolumeCache.get` returns the freshly decoded
in-memory volume at once and writes the cache file in a background thread (still atomic, lock held
until done), so the first tile does not wait for the disk. :meth:`VolumeCache.get_many` (an image
with its label maps, as a tile needs them) decodes uncached volumes in parallel threads. The
sagittal copy is built after the entry's lock is released, under its own lock
(``<key>.sagittal.lock``, which eviction respects too), so a process waiting for the entry waits
for its commit only. Background threads run at lowered CPU priority (Linux: +10 niceness per
thread), so warm tiles keep the CPU while a new volume is written and copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ctspine.atomic import atomic_write, fsync_dir, lock_file
from ctspine.imaging import display, projection
from ctspine.imaging.volume_io import KINDS, VolumeError, read_volume

try:  # ISA-L's CRC-32 is faster than zlib's; same polynomial, same values.
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LAYOUT = "kji"
DATA_FILE = "volume.npy"
META_FILE = "meta.json"
SAGITTAL_FILE = "sagittal.npy"
SAGITTAL_META_FILE = "sagittal.json"
SAGITTAL_LAYOUT = "sagittal-display"
_WRITE_CHUNK_BYTES = 16 << 20
_SAGITTAL_CHUNK_SLICES = 4  # k-slices per copy step
_BACKGROUND_NICENESS = 10


@dataclass(frozen=True)
class SourceIdentity:
    """Which source file a cache entry was made from: absolute path, size (bytes), mtime (ns)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> SourceIdentity:
        resolved = Path(path).resolve()
        try:
            stat = resolved.stat()
        except OSError as exc:
            raise VolumeError(f"{resolved.name}: cannot read file ({exc.strerror})") from exc
        return cls(path=str(resolved), size=stat.st_size, mtime_ns=stat.st_mtime_ns)

    def key(self, kind: str) -> str:
        """``<path hash>-<identity hash>``: entries of one path share the first half."""
        path_hash = hashlib.sha256(f"{kind}\0{self.path}".encode()).hexdigest()[:16]
        version = hashlib.sha256(f"{self.size}\0{self.mtime_ns}".encode()).hexdigest()[:12]
        return f"{path_hash}-{version}"


@dataclass(eq=False)
class CachedVolume:
    """A cached volume, ready to slice.

    ``data`` is the RAS+ volume (X, Y, Z), read-only: a view of the memory-mapped cache file, or of
    the decoded bytes until a write-behind finishes (``persisted`` False). ``affine`` maps RAS
    voxel indices to world mm; ``spacing`` is (i, j, k) in mm; ``intensity_range`` is the
    (min, max) value (HU for CT); ``original_axcodes`` is the source file's orientation.
    ``sagittal``, once its copy is built, is the memory-mapped (X, Z, Y) array of sagittal tiles
    (``sagittal[i]`` is sagittal tile ``i``), else None.
    """

    key: str
    kind: str
    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    intensity_range: tuple[float, float]
    original_axcodes: str
    source: SourceIdentity
    directory: Path
    persisted: bool
    projections: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    sagittal: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    def slice_count(self, *, plane: str) -> int:
        """Number of slices along ``plane``'s normal."""
        return display.slice_count(self.data.shape, plane=plane)

    def tile(self, *, plane: str, index: int) -> np.ndarray:
        """The ``plane`` slice ``index`` in display orientation (a read-only view)."""
        sagittal = self.sagittal
        if plane == "sagittal" and sagittal is not None:
            return sagittal[display.check_index(self.data.shape, plane=plane, index=index)]
        return display.slice_tile(self.data, plane=plane, index=index)

    def pixel_spacing(self, *, plane: str) -> display.PixelSpacing:
        """Tile pixel size (column mm, row mm) for ``plane``."""
        return display.pixel_spacing(self.spacing, plane=plane)


@dataclass(frozen=True)
class CacheEntry:
    """One cache directory as seen by eviction: bytes on disk and last use (unix seconds)."""

    key: str
    directory: Path
    size_bytes: int
    last_used: float | None  # None: no sidecar (incomplete or crashed conversion)


class VolumeCache:
    """Decoded-volume cache under ``root``, kept below ``max_bytes`` on disk by LRU eviction.

    One instance per process is meant to be shared (thread-safe); it keeps up to ``max_open``
    volumes memory-mapped, because reopening a memmap dominates the cost of strided planes.
    ``touch_interval_s`` limits how often a use updates the sidecar's mtime (the LRU clock).
    ``verify_checksum`` re-reads the whole file to check its CRC-32 on every open (slow; the
    default checks size, shape and dtype only). Volumes of at least ``sagittal_min_bytes`` get a
    contiguous sagittal copy (None: never); ``sagittal_poll_s`` limits how often an open volume
    without one looks for it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_bytes: int,
        *,
        max_open: int = 16,
        write_behind: bool = True,
        verify_checksum: bool = False,
        touch_interval_s: float = 30.0,
        sagittal_min_bytes: int | None = 32 << 20,
        sagittal_poll_s: float = 1.0,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.max_open = max_open
        self.write_behind = write_behind
        self.verify_checksum = verify_checksum
        self.touch_interval_s = touch_interval_s
        self.sagittal_min_bytes = sagittal_min_bytes
        self.sagittal_poll_s = sagittal_poll_s
        self._sagittal_checked: dict[str, float] = {}
        self._volumes_dir = self.root / "volumes"
        self._locks_dir = self.root / "locks"
        self._volumes_dir.mkdir(parents=True, exist_ok=True)
        self._locks_dir.mkdir(parents=True, exist_ok=True)
        self._open: OrderedDict[str, CachedVolume] = OrderedDict()
        self._last_touch: dict[str, float] = {}
        self._pending: dict[str, threading.Thread] = {}
        self._mutex = threading.Lock()

    # ----------------------------------------------------------------- public API

    def get(self, source_path: str | os.PathLike, *, kind: str = "image") -> CachedVolume:
        """The cached RAS+ volume of ``source_path`` (a ``.nii``/``.nii.gz``), converting it first
        if needed. ``kind`` is "image" or "label" (labels are validated 0-25 and stored as uint8).

        Raises :class:`.volume_io.VolumeError` for files that cannot be read as volumes.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self._get(SourceIdentity.of(source_path), kind)

    def _get(self, source: SourceIdentity, kind: str) -> CachedVolume:
        key = source.key(kind)
        with self._mutex:
            volume = self._open.get(key)
            if volume is not None:
                self._open.move_to_end(key)
        if volume is not None:
            # An entry evicted by another process loses its sidecar first: open it afresh.
            if not volume.persisted or (volume.directory / META_FILE).exists():
                if volume.sagittal is None and volume.persisted:
                    self._look_for_sagittal(volume)
                self._touch(volume)
                return volume
            self._forget(key)
        volume = self._open_entry(key, source=source, kind=kind)
        if volume is not None:
            self._remember(volume)
            if volume.sagittal is None and self._wants_sagittal(volume):
                self._start_sagittal_build(volume)
        else:
            volume = self._convert_or_reuse(key, source=source, kind=kind)
        self._touch(volume)
        return volume

    def get_many(self, requests: list[tuple[str | os.PathLike, str]]) -> list[CachedVolume]:
        """:meth:`get` of several ``(source_path, kind)`` at once. Those not open yet are fetched
        in parallel threads, so an uncached image and its label map decode at the same time
        (ISA-L releases the GIL): the first tile of a case waits for the slower decode, not for
        both in turn. Raises the first error in request order."""
        for _, kind in requests:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        sources = [(SourceIdentity.of(path), kind) for path, kind in requests]
        unique = list(dict.fromkeys(sources))
        with self._mutex:
            missing = [
                request for request in unique if request[0].key(request[1]) not in self._open
            ]
        if len(unique) == 1 or not missing:
            return [self._get(source, kind) for source, kind in sources]
        results: dict[tuple[SourceIdentity, str], CachedVolume | BaseException] = {}

        def fetch(request: tuple[SourceIdentity, str]) -> None:
            try:
                results[request] = self._get(*request)
            except BaseException as exc:  # re-raised in the calling thread
                results[request] = exc

        helpers = [
            threading.Thread(target=fetch, args=(request,), name="volume-cache-get")
            for request in unique[1:]
        ]
        for helper in helpers:
            helper.start()
        try:
            fetch(unique[0])
        finally:
            for helper in helpers:
                helper.join()
        for request in unique:
            if isinstance(results[request], BaseException):
                raise results[request]
        return [results[request] for request in sources]

    def projection(self, volume: CachedVolume, *, plane: str, mode: str = "mip") -> np.ndarray:
        """Whole-volume ``mode`` projection along ``plane``'s normal, display-oriented; computed
        once, then kept beside the volume (and in memory) for later requests."""
        display.check_plane(plane)
        projection.check_mode(mode)
        name = f"proj-{mode}-{plane}.npy"
        expected = display.tile_shape(volume.shape, plane=plane)
        tile = self._load_projection(volume, name, expected)
        if tile is None:
            tile = projection.project(volume.data, plane=plane, mode=mode)
            self._store_projection(volume, name, tile)
        return tile

    def label_projection(
        self, image: CachedVolume, labels: CachedVolume, *, plane: str, mode: str = "mip"
    ) -> projection.LabelledProjection:
        """Whole-volume projection of ``image`` with the label tile to overlay on it (label rule
        of :mod:`.projection`), both cached after the first computation."""
        display.check_plane(plane)
        projection.check_mode(mode)
        if image.shape != labels.shape:
            raise VolumeError(f"label grid {labels.shape} differs from image grid {image.shape}")
        expected = display.tile_shape(image.shape, plane=plane)
        tile_name = f"proj-{mode}-{plane}.npy"
        label_name = f"labelproj-{image.key}-{mode}-{plane}.npy"
        tile = self._load_projection(image, tile_name, expected)
        label_tile = self._load_projection(labels, label_name, expected)
        if tile is None or label_tile is None:
            result = projection.project_with_labels(image.data, labels.data, plane=plane, mode=mode)
            tile, label_tile = result.tile, result.labels
            self._store_projection(image, tile_name, tile)
            self._store_projection(labels, label_name, label_tile)
        return projection.LabelledProjection(
            tile=tile, labels=label_tile, slab=projection.whole(image.data, plane=plane)
        )

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background cache writes (and sagittal copies) of this instance to finish."""
        while True:
            with self._mutex:
                threads = [t for t in self._pending.values() if t is not threading.current_thread()]
            if not threads:
                return
            for thread in threads:
                thread.join(timeout)
            if timeout is not None:
                return

    def entries(self) -> list[CacheEntry]:
        """All cache directories with their size on disk and last use."""
        found = []
        for directory in self._volumes_dir.iterdir():
            size, last_used = 0, None
            try:
                with os.scandir(directory) as files:
                    for item in files:
                        stat = item.stat()
                        size += stat.st_size
                        if item.name == META_FILE:
                            last_used = stat.st_mtime
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted meanwhile by another process, or a stray file
            found.append(
                CacheEntry(
                    key=directory.name, directory=directory, size_bytes=size, last_used=last_used
                )
            )
        return found

    def evict(self, *, protect: tuple[str, ...] = ()) -> list[str]:
        """Delete least recently used entries until the cache fits ``max_bytes``; returns the keys
        deleted. Entries being converted (locked) and ``protect``-ed keys are kept; leftovers of
        crashed conversions (no sidecar, not locked) are deleted first."""
        entries = self.entries()
        total = sum(entry.size_bytes for entry in entries)
        deleted = []
        for entry in [e for e in entries if e.last_used is None and e.key not in protect]:
            if self._delete_entry(entry.key):
                total -= entry.size_bytes
                deleted.append(entry.key)
        used = sorted((e for e in entries if e.last_used is not None), key=lambda e: e.last_used)
        for entry in used:
            if total <= self.max_bytes:
                break
            if entry.key in protect:
                continue
            if self._delete_entry(entry.key):
                total -= entry.size_bytes
                deleted.append(entry.key)
        if total > self.max_bytes:
            logger.warning(
                "volume cache %s holds %d bytes, over its %d limit",
                self.root,
                total,
                self.max_bytes,
            )
        return deleted

    # ----------------------------------------------------------------- opening

    def _entry_dir(self, key: str) -> Path:
        return self._volumes_dir / key

    def _read_meta(self, directory: Path) -> dict | None:
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION else None

    def _open_entry(self, key: str, *, source: SourceIdentity, kind: str) -> CachedVolume | None:
        """Memory-map an existing, intact entry; None if absent or damaged (then rebuilt)."""
        directory = self._entry_dir(key)
        meta = self._read_meta(directory)
        if meta is None:
            return None
        data_path = directory / DATA_FILE
        try:
            if meta["source"] != source.__dict__ or meta["kind"] != kind:
                raise ValueError("sidecar describes another source")
            if data_path.stat().st_size != meta["data_bytes"]:
                raise ValueError(
                    f"{data_path.stat().st_size} bytes, sidecar says {meta['data_bytes']}"
                )
            stored = np.load(data_path, mmap_mode="r")
            if list(stored.shape) != meta["storage_shape"] or stored.dtype.str != meta["dtype"]:
                raise ValueError(f"{stored.shape} {stored.dtype} does not match the sidecar")
            if self.verify_checksum and self._checksum(stored) != meta["crc32"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("volume cache entry %s is damaged (%s); rebuilding", directory, exc)
            return None
        volume = CachedVolume(
            key=key,
            kind=kind,
            data=stored.T,  # (k, j, i) storage -> RAS (i, j, k) view
            affine=np.array(meta["affine"], dtype=np.float64),
            spacing=tuple(meta["spacing"]),
            intensity_range=tuple(meta["intensity_range"]),
            original_axcodes=meta["original_axcodes"],
            source=source,
            directory=directory,
            persisted=True,
        )
        if self._wants_sagittal(volume):
            volume.sagittal = self._open_sagittal(directory, meta, check_crc=self.verify_checksum)
            self._sagittal_checked[key] = time.monotonic()
        return volume

    def _remember(self, volume: CachedVolume) -> None:
        with self._mutex:
            self._open[volume.key] = volume
            self._open.move_to_end(volume.key)
            while len(self._open) > self.max_open:
                oldest = next(iter(self._open))
                if oldest == volume.key:
                    break
                del self._open[oldest]

    def _forget(self, key: str) -> None:
        with self._mutex:
            self._open.pop(key, None)

    def _touch(self, volume: CachedVolume) -> None:
        now = time.monotonic()
        if now - self._last_touch.get(volume.key, -np.inf) < self.touch_interval_s:
            return
        self._last_touch[volume.key] = now
        try:
            os.utime(volume.directory / META_FILE)
        except FileNotFoundError:
            pass  # not written yet (write-behind) or just evicted

    # ----------------------------------------------------------------- locking

    def _lock_path(self, key: str) -> Path:
        return self._locks_dir / f"{key}.lock"

    def _lock(self, key: str, *, blocking: bool = True) -> int | None:
        """flock the key's lock file; returns the fd (close it to release), None if busy."""
        return lock_file(self._lock_path(key), blocking=blocking)

    # ----------------------------------------------------------------- conversion

    def _convert_or_reuse(self, key: str, *, source: SourceIdentity, kind: str) -> CachedVolume:
        lock = self._lock(key)
        try:
            volume = self._open_entry(key, source=source, kind=kind)  # done while we waited?
            if volume is not None:
                os.close(lock)
                self._remember(volume)
                return volume
            volume = self._convert(key, source=source, kind=kind)
        except BaseException:
            os.close(lock)
            raise
        if not self.write_behind:
            persisted = self._persist(volume, lock)  # releases the lock if it fails
            try:
                self._after_commit(persisted)
            finally:
                os.close(lock)
            if self._wants_sagittal(persisted):  # in the background: tiles need not wait
                self._start_background(key, self._build_sagittal_if_free, persisted)
            return persisted
        # Remember the in-memory copy before the writer can swap in the memmapped one.
        self._remember(volume)
        self._start_background(key, self._write_behind, volume, lock)
        return volume

    def _start_background(self, key: str, target, *args, if_idle: bool = False) -> None:
        """Run ``target(*args)`` in a (non-daemon: the interpreter finishes it before exiting)
        thread that :meth:`wait` joins; with ``if_idle``, only if none runs for ``key``."""
        thread = threading.Thread(
            target=self._background, args=(key, target, *args), name=f"volume-cache-{key}"
        )
        with self._mutex:
            if if_idle and key in self._pending:
                return
            self._pending[key] = thread
        thread.start()

    def _background(self, key: str, target, *args) -> None:
        _lower_thread_priority()
        try:
            target(*args)
        finally:
            with self._mutex:
                if self._pending.get(key) is threading.current_thread():
                    del self._pending[key]

    def _write_behind(self, volume: CachedVolume, lock: int) -> None:
        try:
            persisted = self._persist(volume, lock)
        except BaseException:
            return  # logged and lock released; the next get() converts again
        try:
            self._after_commit(persisted)
        finally:
            os.close(lock)
        if self._wants_sagittal(persisted):
            self._build_sagittal_if_free(persisted)

    def _after_commit(self, volume: CachedVolume) -> None:
        """Lock still held: drop older versions of the source, keep the cache under its limit."""
        self._remove_stale_versions(volume.key)
        self.evict(protect=(volume.key,))

    def _convert(self, key: str, *, source: SourceIdentity, kind: str) -> CachedVolume:
        """Decode the source into memory (lock held). Separate so tests can count conversions."""
        started = time.perf_counter()
        decoded = read_volume(source.path, kind=kind)
        data = decoded.data
        if data.dtype.kind == "f":  # NaN would poison windowing and projections
            data = np.nan_to_num(data.astype(np.float32))
        if kind == "label":
            intensity_range = (0.0, float(data.max()))
        else:
            intensity_range = (float(data.min()), float(data.max()))
        directory = self._entry_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.iterdir():  # a crashed or damaged conversion's files
            leftover.unlink(missing_ok=True)
        logger.info(
            "decoded %s (%s, %s %s) in %.2f s",
            source.path,
            kind,
            "x".join(map(str, data.shape)),
            data.dtype,
            time.perf_counter() - started,
        )
        return CachedVolume(
            key=key,
            kind=kind,
            data=data,
            affine=decoded.affine,
            spacing=decoded.spacing,
            intensity_range=intensity_range,
            original_axcodes=decoded.original_axcodes,
            source=source,
            directory=directory,
            persisted=False,
        )

    @staticmethod
    def _checksum(storage: np.ndarray) -> int:
        value = 0
        step = max(1, _WRITE_CHUNK_BYTES // max(1, storage[0].nbytes))
        for k0 in range(0, storage.shape[0], step):
            value = crc32(np.ascontiguousarray(storage[k0 : k0 + step]), value)
        return value

    def _persist(self, volume: CachedVolume, lock: int) -> CachedVolume:
        """Write the cache file and sidecar atomically and swap the memmapped copy in for the
        in-memory one; the lock stays held. On failure: log, clean up, release the lock, raise."""
        started = time.perf_counter()
        directory = volume.directory
        storage = volume.data.T  # RAS (i, j, k) -> (k, j, i) C order
        data_path = directory / DATA_FILE
        crc = 0

        def write_storage(handle) -> None:
            nonlocal crc
            np.lib.format.write_array_header_1_0(
                handle,
                {
                    "descr": np.lib.format.dtype_to_descr(storage.dtype),
                    "fortran_order": False,
                    "shape": storage.shape,
                },
            )
            step = max(1, _WRITE_CHUNK_BYTES // max(1, storage[0].nbytes))
            for k0 in range(0, storage.shape[0], step):
                chunk = np.ascontiguousarray(storage[k0 : k0 + step])  # no copy for RAS files
                crc = crc32(chunk, crc)
                handle.write(chunk.data)

        try:
            atomic_write(data_path, write_storage)
            meta = {
                "format": FORMAT_VERSION,
                "kind": volume.kind,
                "layout": LAYOUT,
                "shape_ras": list(volume.shape),
                "storage_shape": list(storage.shape),
                "dtype": storage.dtype.str,
                "affine": volume.affine.tolist(),
                "spacing": list(volume.spacing),
                "intensity_range": list(volume.intensity_range),
                "original_axcodes": volume.original_axcodes,
                "source": volume.source.__dict__,
                "data_file": DATA_FILE,
                "data_bytes": data_path.stat().st_size,
                "crc32": crc,
                "created_unix": time.time(),
            }
            atomic_write(directory / META_FILE, json.dumps(meta, indent=1).encode())
            fsync_dir(directory)
            persisted = self._open_entry(volume.key, source=volume.source, kind=volume.kind)
            if persisted is None:
                raise VolumeError(f"cache entry {directory} unreadable right after writing")
        except BaseException:
            logger.exception("writing volume cache entry %s failed", directory)
            (directory / META_FILE).unlink(missing_ok=True)
            self._forget(volume.key)
            os.close(lock)
            raise
        persisted.projections.update(volume.projections)
        with self._mutex:
            if self._open.get(volume.key) in (None, volume):
                self._open[volume.key] = persisted  # swap the in-memory copy for the memmap
        logger.info(
            "cached %s in %s (%.2f s)", volume.source.path, directory, time.perf_counter() - started
        )
        return persisted

    # ----------------------------------------------------------------- sagittal copies

    def _wants_sagittal(self, volume: CachedVolume) -> bool:
        return self.sagittal_min_bytes is not None and volume.data.nbytes >= self.sagittal_min_bytes

    def _open_sagittal(self, directory: Path, meta: dict, *, check_crc: bool) -> np.ndarray | None:
        """The committed sagittal copy of the entry whose sidecar is ``meta``, memory-mapped;
        None if absent or damaged."""
        path = directory / SAGITTAL_FILE
        try:
            side = json.loads((directory / SAGITTAL_META_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("sagittal copy in %s is damaged (%s); rebuilding", directory, exc)
            return None
        try:
            z, y, x = meta["storage_shape"]
            if side.get("format") != FORMAT_VERSION or side.get("layout") != SAGITTAL_LAYOUT:
                raise ValueError("unknown sidecar format")
            if side["volume_crc32"] != meta["crc32"]:
                raise ValueError("made from another version of the volume")
            if path.stat().st_size != side["data_bytes"]:
                raise ValueError(f"{path.stat().st_size} bytes, sidecar says {side['data_bytes']}")
            copy = np.load(path, mmap_mode="r")
            if copy.shape != (x, z, y) or copy.dtype.str != meta["dtype"]:
                raise ValueError(f"{copy.shape} {copy.dtype} does not match the volume")
            if check_crc and self._checksum(copy) != side["crc32"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("sagittal copy in %s is damaged (%s); rebuilding", directory, exc)
            return None
        return copy

    def _look_for_sagittal(self, volume: CachedVolume) -> None:
        """An open volume without a sagittal copy: attach one committed meanwhile (perhaps by
        another process), or start building it; at most every ``sagittal_poll_s``."""
        if not self._wants_sagittal(volume):
            return
        now = time.monotonic()
        if now - self._sagittal_checked.get(volume.key, -np.inf) < self.sagittal_poll_s:
            return
        self._sagittal_checked[volume.key] = now
        meta = self._read_meta(volume.directory)
        if meta is None:
            return
        volume.sagittal = self._open_sagittal(
            volume.directory, meta, check_crc=self.verify_checksum
        )
        if volume.sagittal is None:
            self._start_sagittal_build(volume)

    def _start_sagittal_build(self, volume: CachedVolume) -> None:
        # Not while this process writes the entry or builds its copy already.
        self._start_background(volume.key, self._build_sagittal_if_free, volume, if_idle=True)

    def _sagittal_lock(self, key: str, *, blocking: bool) -> int | None:
        return lock_file(self._locks_dir / f"{key}.sagittal.lock", blocking=blocking)

    def _build_sagittal_if_free(self, volume: CachedVolume) -> None:
        """Build the sagittal copy of a committed entry unless another process (or thread) is
        building it now (it is then looked for later); evict afterwards (the entry grew)."""
        lock = self._sagittal_lock(volume.key, blocking=False)
        if lock is None:
            return
        try:
            meta = self._read_meta(volume.directory)
            if meta is None:
                return  # evicted or rebuilt meanwhile
            if (volume.directory / SAGITTAL_META_FILE).exists():  # built by another process?
                volume.sagittal = self._open_sagittal(
                    volume.directory, meta, check_crc=self.verify_checksum
                )
                if volume.sagittal is not None:
                    return
            built = self._build_sagittal(volume, meta)
        finally:
            os.close(lock)
        if built:
            self.evict(protect=(volume.key,))

    def _build_sagittal(self, volume: CachedVolume, meta: dict) -> bool:
        """Write ``sagittal.npy`` and its sidecar atomically and attach the copy to ``volume``
        (its sagittal lock is held); False (logged) if the entry is gone or the write fails."""
        started = time.perf_counter()
        directory = volume.directory
        for name in (SAGITTAL_META_FILE, SAGITTAL_FILE):  # uncommit a damaged copy first
            (directory / name).unlink(missing_ok=True)
        for leftover in directory.glob(f"{SAGITTAL_FILE}.tmp-*"):  # a crashed build's
            leftover.unlink(missing_ok=True)
        path = directory / SAGITTAL_FILE
        try:
            storage = np.load(directory / DATA_FILE, mmap_mode="r")  # (k, j, i)
            value = 0

            def write_copy(handle) -> None:
                nonlocal value
                value, source_crc = write_sagittal_copy(storage, handle)
                if source_crc != meta["crc32"]:  # never copy a damaged volume.npy
                    raise VolumeError(f"{directory / DATA_FILE} does not match its checksum")

            atomic_write(path, write_copy)
            side = {
                "format": FORMAT_VERSION,
                "layout": SAGITTAL_LAYOUT,
                "storage_shape": [storage.shape[2], storage.shape[0], storage.shape[1]],
                "dtype": storage.dtype.str,
                "data_bytes": path.stat().st_size,
                "crc32": value,
                "volume_crc32": meta["crc32"],
            }
            atomic_write(directory / SAGITTAL_META_FILE, json.dumps(side, indent=1).encode())
            fsync_dir(directory)
            copy = self._open_sagittal(directory, meta, check_crc=False)
            if copy is None:
                raise VolumeError(f"sagittal copy in {directory} unreadable right after writing")
        except VolumeError as exc:
            logger.warning("no sagittal copy in %s: %s", directory, exc)
            return False
        except (OSError, ValueError):
            logger.exception("writing the sagittal copy in %s failed", directory)
            return False
        volume.sagittal = copy
        with self._mutex:
            current = self._open.get(volume.key)
        if current is not None and current is not volume and current.directory == directory:
            current.sagittal = copy
        logger.info("sagittal copy of %s in %.2f s", directory, time.perf_counter() - started)
        return True

    # ----------------------------------------------------------------- projections, deletion

    def _load_projection(
        self, volume: CachedVolume, name: str, expected: tuple[int, int]
    ) -> np.ndarray | None:
        tile = volume.projections.get(name)
        if tile is not None:
            return tile
        try:
            tile = np.load(volume.directory / name, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if tile.shape != expected:
            return None
        volume.projections[name] = tile
        return tile

    def _store_projection(self, volume: CachedVolume, name: str, tile: np.ndarray) -> None:
        volume.projections[name] = tile
        try:
            atomic_write(
                volume.directory / name, lambda handle: np.save(handle, tile, allow_pickle=False)
            )
        except FileNotFoundError:
            pass  # the entry was evicted meanwhile; the in-memory copy still serves

    def _remove_stale_versions(self, key: str) -> None:
        """Delete entries made from earlier versions of the same source path."""
        path_hash = key.split("-")[0]
        for directory in self._volumes_dir.glob(f"{path_hash}-*"):
            if directory.name != key:
                self._delete_entry(directory.name)

    def _delete_entry(self, key: str) -> bool:
        lock = self._lock(key, blocking=False)
        if lock is None:
            return False  # being converted right now
        sagittal_lock = self._sagittal_lock(key, blocking=False)
        if sagittal_lock is None:
            os.close(lock)
            return False  # its sagittal copy is being built right now
        try:
            directory = self._entry_dir(key)
            (directory / META_FILE).unlink(missing_ok=True)  # uncommit first
            shutil.rmtree(directory, ignore_errors=True)
            self._lock_path(key).unlink(missing_ok=True)
            (self._locks_dir / f"{key}.sagittal.lock").unlink(missing_ok=True)
        finally:
            os.close(sagittal_lock)
            os.close(lock)
        self._forget(key)
        return True


def write_sagittal_copy(storage: np.ndarray, handle: BinaryIO) -> tuple[int, int]:
    """Write the sagittal tiles of a (k, j, i)-stored volume as an (i, row, col) ``.npy`` into
    ``handle`` (a file opened ``w+b``), ``out[i] == display.slice_tile(storage.T,
    plane="sagittal", index=i)``; returns (CRC-32 of the copy's array bytes, CRC-32 of
    ``storage``'s).

    Reads the source once, sequentially, in chunks of a few whole k-slices, and scatters each
    into the output's rows: tile row ``r`` is ``k = Z-1-r`` and column ``c`` is ``j = Y-1-c``.
    """
    z, y, x = storage.shape
    np.lib.format.write_array_header_1_0(
        handle,
        {
            "descr": np.lib.format.dtype_to_descr(storage.dtype),
            "fortran_order": False,
            "shape": (x, z, y),
        },
    )
    handle.flush()
    out = np.memmap(handle, mode="r+", dtype=storage.dtype, shape=(x, z, y), offset=handle.tell())
    try:
        source_crc = 0
        for k0 in range(0, z, _SAGITTAL_CHUNK_SLICES):
            k1 = min(z, k0 + _SAGITTAL_CHUNK_SLICES)
            chunk = np.ascontiguousarray(storage[k0:k1])
            source_crc = crc32(chunk, source_crc)
            out[:, z - k1 : z - k0, :] = chunk[::-1, ::-1, :].transpose(2, 0, 1)
        out.flush()
        copy_crc = 0
        step = max(1, _WRITE_CHUNK_BYTES // max(1, out[0].nbytes))
        for i0 in range(0, x, step):
            copy_crc = crc32(out[i0 : i0 + step], copy_crc)
    finally:
        del out
    return copy_crc, source_crc


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread), so background
    cache writes yield the CPU to requests."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + _BACKGROUND_NICENESS))
    except OSError:  # pragma: no cover - not permitted: run at normal priority
        pass
