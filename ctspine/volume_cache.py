"""A disk cache of decoded volumes, compressed and chunked, that serves any slice of any plane.

Decoding a CT ``.nii.gz`` is slow; the first :meth:`VolumeCache.get` of a file
decodes it once (:func:`.volume_io.read_volume`, ISA-L gzip) and writes it to the cache as a
:mod:`.volume_store` file; every later access opens that store and decodes only the blocks a
tile needs, through a per-process cache of decoded slabs bounded in bytes
(``slab_cache_bytes``), so stepping through neighbouring slices decodes nothing again.

Layout (one directory per source file and kind, ``<root>/volumes/<key>/``):

- ``volume.b2nd``: the RAS+ volume in (k, j, i) order, i.e. RAS (i, j, k) in Fortran order as
  NIfTI stores a RAS volume, as one compressed, chunked blosc2 NDArray (:mod:`.volume_store`):
  image and labels alike, once each; planes of every orientation come from the same file.
- ``meta.json``: the sidecar written last (it is the commit marker): shape, dtype, affine,
  spacing (mm), intensity range, source identity, store byte size, store layout and the store
  file's CRC-32. Its mtime is the entry's last use, for LRU eviction.
- ``verified``: which version of ``volume.b2nd`` (inode, size, mtime, CRC-32) a process checked
  or wrote since the machine booted, so that other processes need not read it whole again.
- ``proj-<mode>-<plane>.npy``: whole-volume projections computed on first request (block by
  block from the store); ``labelproj-<image key>-<mode>-<plane>.npy`` (in a label entry): the
  label tile for that image's projection.

The key hashes the source's absolute path, size and mtime_ns (and the kind), so a changed file is
converted again and the stale entry of the same path is removed. Conversions are atomic (temporary
file, ``os.replace``) and serialised per volume across processes and threads by ``fcntl.flock`` on
``<root>/locks/<key>.lock``: a second process waits and then reuses the result. A store whose size,
header, shape, dtype or CRC-32 disagrees with its sidecar is reported in the log and converted
again when a process opens it. Because opens check the CRC-32 (``verify_checksum``, on by
default; once per store version and boot, see ``verified``), conversions skip fsync: a crash that
loses a store's bytes leaves an entry that fails the check and is rebuilt, and the cache never
pays the disk flush on the way to a first tile.

With ``write_behind`` (default) the first :meth:`VolumeCache.get` returns the freshly decoded
in-memory volume at once and writes the store in a background thread (still atomic, lock held
until done), so the first tile does not wait for the compression and the disk.
:meth:`VolumeCache.get_many` (an image with its label maps, as a tile needs them) decodes uncached
volumes in parallel threads. Background threads run at lowered CPU priority (Linux: +10 niceness
per thread), so warm tiles keep the CPU while a new volume is written.
"""

from __future__ import annotations

import functools
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

import numpy as np
from nibabel import orientations

from ctspine.atomic import atomic_write, fsync_dir, lock_file
from ctspine.imaging import display, projection
from ctspine.imaging.volume_io import KINDS, Volume, VolumeError, read_volume
from ctspine.volume_store import (
    DEFAULT_LAYOUT,
    DecodedSlabs,
    StoredVolume,
    StoreError,
    StoreLayout,
    open_store,
    write_store,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 1: raw volume.npy plus a sagittal copy
LAYOUT = "kji"
DATA_FILE = "volume.b2nd"
META_FILE = "meta.json"
VERIFIED_FILE = "verified"  # the store version whose CRC-32 was checked since the machine booted
_BACKGROUND_NICENESS = 10
_ANY = object()  # _delete_entry: whatever the entry's last use


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
        version = hashlib.sha256(f"{self.size}\0{self.mtime_ns}".encode()).hexdigest()[:12]
        return f"{_path_hash(self.path, kind)}-{version}"


def _path_hash(path: str, kind: str) -> str:
    """The first half of a key: every version of one (absolute) source path and kind shares it."""
    return hashlib.sha256(f"{kind}\0{path}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CacheLocation:
    """Where a cache lives and how many bytes it may take on disk: what processes that share
    one cache (web workers, job workers, evaluation workers) agree on."""

    root: str
    max_bytes: int


@dataclass(eq=False)
class CachedVolume:
    """A cached volume, ready to slice.

    ``data`` is the RAS+ volume (X, Y, Z): the open store (a :class:`.StoredVolume`, sliced like
    an array in RAS order, each slice decoded on demand), or the decoded array until a write-behind
    finishes (``persisted`` False). ``affine`` maps RAS voxel indices to world mm; ``spacing`` is
    (i, j, k) in mm; ``intensity_range`` is the (min, max) value (HU for CT);
    ``original_axcodes`` is the source file's orientation.
    """

    key: str
    kind: str
    data: StoredVolume | np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    intensity_range: tuple[float, float]
    original_axcodes: str
    source: SourceIdentity
    directory: Path
    persisted: bool
    projections: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    def slice_count(self, *, plane: str) -> int:
        """Number of slices along ``plane``'s normal."""
        return display.slice_count(self.data.shape, plane=plane)

    def tile(self, *, plane: str, index: int) -> np.ndarray:
        """The ``plane`` slice ``index`` in display orientation (read-only)."""
        if isinstance(self.data, StoredVolume):
            return self.data.tile(plane=plane, index=index)
        return display.slice_tile(self.data, plane=plane, index=index)

    def voxel(self, voxel: tuple[int, int, int]):
        """The value at RAS voxel (i, j, k) (HU for CT); reads that voxel's block only."""
        return self.data[tuple(int(v) for v in voxel)][()]

    def read(self) -> np.ndarray:
        """The whole RAS+ volume (X, Y, Z) as an array (decodes the store)."""
        if isinstance(self.data, StoredVolume):
            return self.data.read()
        return self.data

    def as_volume(self) -> Volume:
        """The whole volume decoded, with its geometry, as :func:`.volume_io.read_volume` gives
        it for the source file (NaN of a float image read as 0, as every cached image)."""
        ras_axis_of_stored = orientations.axcodes2ornt(tuple(self.original_axcodes))[:, 0]
        return Volume(
            data=self.read(),
            affine=self.affine,
            spacing=self.spacing,
            original_axcodes=self.original_axcodes,
            original_shape=tuple(self.shape[int(axis)] for axis in ras_axis_of_stored),
        )

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
    stores open and up to ``slab_cache_bytes`` of decoded slabs in memory (recently read tiles'
    neighbourhoods). ``touch_interval_s`` limits how often a use updates the sidecar's mtime (the
    LRU clock). ``verify_checksum`` (default) re-reads the whole store file to check its CRC-32
    when it opens an entry it did not just write (without it only size, header, shape and
    dtype are checked, and stores are not fsynced: turn it off only where a damaged entry would be
    noticed otherwise). ``layout`` is how new stores are chunked and compressed.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_bytes: int,
        *,
        max_open: int = 16,
        write_behind: bool = True,
        verify_checksum: bool = True,
        touch_interval_s: float = 30.0,
        slab_cache_bytes: int = 256 << 20,
        layout: StoreLayout = DEFAULT_LAYOUT,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.max_open = max_open
        self.write_behind = write_behind
        self.verify_checksum = verify_checksum
        self.touch_interval_s = touch_interval_s
        self.layout = layout
        self.slabs = DecodedSlabs(slab_cache_bytes)
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

    def read_volume(self, source_path: str | os.PathLike, *, kind: str = "image") -> Volume:
        """:func:`.volume_io.read_volume` through the cache: the file is decoded from its store
        (converted first if it has none), and it is warm for the viewer afterwards. A store found
        damaged while it is read is converted again from the source, once."""
        try:
            return self.get(source_path, kind=kind).as_volume()
        except StoreError as exc:
            if not self.discard_damaged(exc):
                raise
        return self.get(source_path, kind=kind).as_volume()

    def delete_source(self, source_path: str | os.PathLike) -> list[str]:
        """Delete the entries made from the file at ``source_path``, of every kind and version
        (the file itself is being deleted); returns the keys deleted. An entry being converted
        right now (locked) is left to eviction."""
        path = str(Path(source_path).resolve())
        deleted = []
        for kind in KINDS:
            for directory in self._versions(_path_hash(path, kind)):
                if self._delete_entry(directory.name):
                    deleted.append(directory.name)
        return deleted

    def discard_damaged(self, error: StoreError) -> bool:
        """After ``error`` was raised reading an open entry's store (changed or damaged since it
        was opened): forget the open store and delete the entry, so that the next :meth:`get`
        converts the source again. Returns False, doing nothing, when ``error`` is not about a
        store of this cache. Callers retry once and report a second error."""
        path = getattr(error, "path", None)
        if path is None or Path(path).parent.parent != self._volumes_dir:
            return False
        key = Path(path).parent.name
        logger.warning("volume cache store %s is damaged (%s); converting it again", path, error)
        self._forget(key)
        self._delete_entry(key)  # not if locked: being converted again right now
        return True

    def _get(self, source: SourceIdentity, kind: str) -> CachedVolume:
        key = source.key(kind)
        with self._mutex:
            volume = self._open.get(key)
            if volume is not None:
                self._open.move_to_end(key)
        if volume is not None:
            # An entry evicted by another process loses its sidecar first: open it afresh.
            if not volume.persisted or (volume.directory / META_FILE).exists():
                self._touch(volume)
                return volume
            self._forget(key)
        volume = self._open_entry(key, source=source, kind=kind)
        if volume is not None:
            self._remember(volume)
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
        """Wait for background cache writes of this instance to finish."""
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
        if not self._volumes_dir.is_dir():  # the whole cache folder was deleted
            return found
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
            if self._delete_entry(entry.key, if_last_used=entry.last_used):
                total -= entry.size_bytes
                deleted.append(entry.key)
        used = sorted((e for e in entries if e.last_used is not None), key=lambda e: e.last_used)
        for entry in used:
            if total <= self.max_bytes:
                break
            if entry.key in protect:
                continue
            if self._delete_entry(entry.key, if_last_used=entry.last_used):
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

    def _open_entry(
        self, key: str, *, source: SourceIdentity, kind: str, verify: bool | None = None
    ) -> CachedVolume | None:
        """Open an existing, intact entry's store; None if absent or damaged (then rebuilt).
        ``verify`` (default: ``verify_checksum``) checks the store's CRC-32."""
        directory = self._entry_dir(key)
        meta = self._read_meta(directory)
        if meta is None:
            return None
        check = self.verify_checksum if verify is None else verify
        try:
            if meta["source"] != source.__dict__ or meta["kind"] != kind:
                raise ValueError("sidecar describes another source")
            checked = check and _verified_since_boot(directory, meta["crc32"])
            stored = open_store(
                directory / DATA_FILE,
                shape=tuple(meta["shape_ras"]),
                dtype=meta["dtype"],
                size=meta["data_bytes"],
                crc32=meta["crc32"] if check and not checked else None,
                slabs=self.slabs,
            )
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            logger.warning("volume cache entry %s is damaged (%s); rebuilding", directory, exc)
            return None
        if check and not checked:
            _mark_verified(directory, meta["crc32"])
        return CachedVolume(
            key=key,
            kind=kind,
            data=stored,
            affine=np.array(meta["affine"], dtype=np.float64),
            spacing=tuple(meta["spacing"]),
            intensity_range=tuple(meta["intensity_range"]),
            original_axcodes=meta["original_axcodes"],
            source=source,
            directory=directory,
            persisted=True,
        )

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
            return persisted
        # Remember the in-memory copy before the writer can swap in the open store.
        self._remember(volume)
        self._start_background(key, self._write_behind, volume, lock)
        return volume

    def _start_background(self, key: str, target, *args) -> None:
        """Run ``target(*args)`` in a (non-daemon: the interpreter finishes it before exiting)
        thread that :meth:`wait` joins."""
        thread = threading.Thread(
            target=self._background, args=(key, target, *args), name=f"volume-cache-{key}"
        )
        with self._mutex:
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

    def _persist(self, volume: CachedVolume, lock: int) -> CachedVolume:
        """Write the store and sidecar atomically and swap the open store in for the in-memory
        volume; the lock stays held. On failure: log, clean up, release the lock, raise."""
        started = time.perf_counter()
        directory = volume.directory
        data_path = directory / DATA_FILE
        try:
            value = write_store(  # RAS -> (k, j, i)
                data_path, volume.data.T, layout=self.layout, durable=not self.verify_checksum
            )
            meta = {
                "format": FORMAT_VERSION,
                "kind": volume.kind,
                "layout": LAYOUT,
                "store": {
                    "chunks": list(self.layout.chunks),
                    "blocks": list(self.layout.blocks),
                    "codec": self.layout.codec,
                    "clevel": self.layout.clevel,
                },
                "shape_ras": list(volume.shape),
                "dtype": volume.data.dtype.str,
                "affine": volume.affine.tolist(),
                "spacing": list(volume.spacing),
                "intensity_range": list(volume.intensity_range),
                "original_axcodes": volume.original_axcodes,
                "source": volume.source.__dict__,
                "data_file": DATA_FILE,
                "data_bytes": data_path.stat().st_size,
                "crc32": value,
                "created_unix": time.time(),
            }
            atomic_write(
                directory / META_FILE,
                json.dumps(meta, indent=1).encode(),
                durable=not self.verify_checksum,
            )
            if not self.verify_checksum:
                fsync_dir(directory)
            # The CRC-32 was just taken from the bytes written: no need to read them back.
            persisted = self._open_entry(
                volume.key, source=volume.source, kind=volume.kind, verify=False
            )
            if persisted is None:
                raise StoreError(f"cache entry {directory} unreadable right after writing")
            _mark_verified(directory, value)
        except BaseException:
            logger.exception("writing volume cache entry %s failed", directory)
            (directory / META_FILE).unlink(missing_ok=True)
            self._forget(volume.key)
            os.close(lock)
            raise
        persisted.projections.update(volume.projections)
        with self._mutex:
            if self._open.get(volume.key) in (None, volume):
                self._open[volume.key] = persisted  # swap the in-memory copy for the store
        logger.info(
            "cached %s in %s (%.2f s)", volume.source.path, directory, time.perf_counter() - started
        )
        return persisted

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
        for directory in self._versions(key.split("-")[0]):
            if directory.name != key:
                self._delete_entry(directory.name)

    def _versions(self, path_hash: str) -> list[Path]:
        """The entry folders of every version of one source path and kind."""
        return list(self._volumes_dir.glob(f"{path_hash}-*"))

    def _delete_entry(self, key: str, *, if_last_used: float | None | object = _ANY) -> bool:
        """Delete the entry ``key`` unless it is locked; with ``if_last_used``, only if its
        sidecar's mtime (None: no sidecar) is still that. Eviction decides from a listing made
        before it takes the entry's lock: meanwhile another process may have committed the entry
        (then no longer a crashed conversion's leftover) or used it (no longer the LRU one)."""
        lock = self._lock(key, blocking=False)
        if lock is None:
            return False  # being converted right now
        try:
            directory = self._entry_dir(key)
            if if_last_used is not _ANY and _last_used(directory) != if_last_used:
                return False
            (directory / META_FILE).unlink(missing_ok=True)  # uncommit first
            shutil.rmtree(directory, ignore_errors=True)
            self._lock_path(key).unlink(missing_ok=True)
        finally:
            os.close(lock)
        self._forget(key)
        return True


@functools.cache
def _boot_id() -> str | None:
    """This boot of the machine (Linux); None where unknown (every open then checks)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _store_version(directory: Path, crc: int) -> str | None:
    """The boot, the store file's identity and its expected CRC-32; None without a boot id."""
    boot = _boot_id()
    if boot is None:
        return None
    stat = (directory / DATA_FILE).stat()
    return f"{boot} {stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {crc}"


def _verified_since_boot(directory: Path, crc: int) -> bool:
    """Whether a process checked (or wrote) this very store file since the machine booted.

    The check exists for bytes lost in a crash (stores are not fsynced) and for a store changed
    in place or replaced: a reboot changes the boot id, a rewrite the mtime and a replacement the
    inode, and each of these makes the next process check the CRC-32 again. So the whole file is
    read once per version per boot, not once per server process."""
    try:
        version = _store_version(directory, crc)
        return version is not None and (directory / VERIFIED_FILE).read_text() == version
    except OSError:
        return False


def _mark_verified(directory: Path, crc: int) -> None:
    try:
        version = _store_version(directory, crc)
        if version is not None:
            atomic_write(directory / VERIFIED_FILE, version.encode(), durable=False)
    except OSError:  # the entry was evicted meanwhile: nothing to remember
        pass


def _last_used(directory: Path) -> float | None:
    """The entry's last use (its sidecar's mtime, unix seconds); None without a sidecar."""
    try:
        return (directory / META_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


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
