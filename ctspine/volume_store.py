"""A compressed, chunked on-disk store for one RAS+ volume (a blosc2 NDArray file).

The volume is stored in (k, j, i) C order, i.e. the RAS+ array ``v[i, j, k]`` of shape (X, Y, Z)
transposed, exactly how NIfTI stores a RAS volume, so a RAS file is written without reshuffling.
Chunks and blocks are cubes-ish in voxel space, so a plane of any orientation decodes only the
blocks it crosses: there is no second copy for sagittal tiles.

A plane is read straight from the blocks it crosses. When the two planes before it in one
direction were read recently (someone steps through neighbouring slices), the whole block-aligned
slab around it is decoded once and kept in a small per-process :class:`DecodedSlabs` cache bounded
in bytes, and the following planes of that slab decode nothing again. Scattered reads (many
clients, random slices) seldom pay for a whole slab: with one neighbour as the trigger and a
long memory of recent planes, random tiles decoded slabs often enough to halve the throughput
of 8 clients (docs/performance.md).

Files are written atomically (temporary file, ``os.replace``; fsync unless the caller checks the
CRC-32 before it trusts a file, as the volume cache does). :func:`open_store` checks
what it can before anything is read (size, header, shape, dtype; optionally the CRC-32 of the whole
file) and raises :class:`StoreError` with the file (its folder and name: users may see the message)
and the reason; a block found damaged when read raises it too.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import blosc2
import numpy as np

from ctspine.atomic import atomic_replace, fsync_dir
from ctspine.imaging import display
from ctspine.imaging.volume_io import VolumeError

try:  # ISA-L's CRC-32 is faster than zlib's; same polynomial, same values.
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

_CRC_READ_BYTES = 16 << 20
#: RAS axis -> storage axis: storage is (k, j, i).
_STORAGE_AXIS = {0: 2, 1: 1, 2: 0}


class StoreError(VolumeError):
    """A store file that is missing, truncated, damaged or not what its caller expected.

    The message, which users may see, names the file by its folder and name only
    (``<entry>/volume.b2nd``); ``path`` is the full path, for logs and for the cache to rebuild
    the entry."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def _shown(path: Path) -> str:
    """How a message names a store file: its folder and name, not the server's path to it."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


@dataclass(frozen=True)
class StoreLayout:
    """How a volume is chunked and compressed. ``chunks`` and ``blocks`` are in storage order
    (k, j, i) voxels; ``codec`` is a blosc2 codec name ("lz4", "zstd", ...) at ``clevel``, after a
    byte shuffle (``bitshuffle`` for a bit shuffle)."""

    chunks: tuple[int, int, int] = (64, 128, 128)
    blocks: tuple[int, int, int] = (16, 32, 32)
    codec: str = "lz4"
    clevel: int = 1
    bitshuffle: bool = False

    def cparams(self) -> dict:
        try:
            codec = blosc2.Codec[self.codec.upper()]
        except KeyError:
            raise ValueError(f"unknown blosc2 codec {self.codec!r}") from None
        shuffle = blosc2.Filter.BITSHUFFLE if self.bitshuffle else blosc2.Filter.SHUFFLE
        return {"codec": codec, "clevel": self.clevel, "filters": [shuffle], "filters_meta": [0]}

    def fitted(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(chunks, blocks) clipped to a storage ``shape`` (a small volume is one chunk)."""
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, shape, strict=True))
        blocks = tuple(min(b, c) for b, c in zip(self.blocks, chunks, strict=True))
        return chunks, blocks


DEFAULT_LAYOUT = StoreLayout()


def write_store(
    path: str | os.PathLike,
    storage: np.ndarray,
    *,
    layout: StoreLayout = DEFAULT_LAYOUT,
    durable: bool = True,
) -> int:
    """Write ``storage`` (a (k, j, i) array, any memory order) to ``path`` atomically; returns the
    file's CRC-32 (check it with :func:`open_store`'s ``crc32``).

    blosc2 writes the file itself, one row of chunks along k at a time (quicker than building the
    frame in memory and writing it: docs/performance.md), so a non-contiguous view is copied one
    row at a time, never whole. ``durable=False`` skips the fsyncs (see
    :func:`.atomic.atomic_replace`): for callers that check the CRC-32 whenever they open the
    file."""
    if storage.ndim != 3:
        raise ValueError(f"a store holds a 3D volume, not shape {storage.shape}")
    path = Path(path)
    chunks, blocks = layout.fitted(storage.shape)
    checksum = 0

    def write(temp: Path) -> None:
        nonlocal checksum
        array = blosc2.empty(
            storage.shape,
            dtype=storage.dtype,
            chunks=chunks,
            blocks=blocks,
            cparams=layout.cparams(),
            urlpath=str(temp),
            contiguous=True,
        )
        for start in range(0, storage.shape[0], chunks[0]):
            array[start : start + chunks[0]] = storage[start : start + chunks[0]]
        del array  # closes the file
        checksum = file_crc32(temp)

    atomic_replace(path, write, durable=durable)
    if durable:
        fsync_dir(path.parent)
    return checksum


def file_crc32(path: str | os.PathLike) -> int:
    """CRC-32 of a file's bytes, read into one reused buffer. Not through a memory map: a file
    truncated meanwhile would kill the process (SIGBUS) instead of failing the check."""
    value = 0
    buffer = bytearray(_CRC_READ_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            value = crc32(view[:count], value)
    return value


def open_store(
    path: str | os.PathLike,
    *,
    shape: tuple[int, int, int] | None = None,
    dtype: np.dtype | str | None = None,
    size: int | None = None,
    crc32: int | None = None,
    slabs: DecodedSlabs | None = None,
) -> StoredVolume:
    """Open the store at ``path``. ``shape`` is the RAS (X, Y, Z) shape expected, ``dtype``,
    ``size`` (bytes) and ``crc32`` (of the whole file, read once: slow on big files) are checked
    when given. ``slabs`` is the decoded-slab cache to use (default: none, every plane decodes).
    Raises :class:`StoreError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        actual_size = path.stat().st_size
    except OSError as exc:
        raise StoreError(
            f"{_shown(path)}: cannot read the store file ({exc.strerror})", path=path
        ) from exc
    if size is not None and actual_size != size:
        raise StoreError(
            f"{_shown(path)}: {actual_size} bytes, expected {size} (truncated or replaced)",
            path=path,
        )
    if crc32 is not None and file_crc32(path) != crc32:
        raise StoreError(f"{_shown(path)}: checksum mismatch (the file is damaged)", path=path)
    try:
        array = blosc2.open(str(path), mode="r")
    except (RuntimeError, ValueError, OSError) as exc:
        raise StoreError(f"{_shown(path)}: not a readable blosc2 store", path=path) from exc
    if not isinstance(array, blosc2.NDArray) or array.ndim != 3:
        raise StoreError(f"{_shown(path)}: not a 3D volume store", path=path)
    ras_shape = tuple(int(n) for n in array.shape[::-1])
    if shape is not None and ras_shape != tuple(shape):
        raise StoreError(f"{_shown(path)}: shape {ras_shape}, expected {tuple(shape)}", path=path)
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise StoreError(
            f"{_shown(path)}: dtype {array.dtype}, expected {np.dtype(dtype)}", path=path
        )
    stat = path.stat()
    return StoredVolume(
        path=path, array=array, slabs=slabs, token=(str(path), stat.st_ino, stat.st_mtime_ns)
    )


class StoredVolume:
    """An open store, read as the RAS+ volume (X, Y, Z) it holds.

    Indexing with RAS integers and step-1 slices (``volume[i0:i1, :, k]``) decodes just that part
    and returns a numpy array (or scalar) in RAS axis order; :meth:`tile` serves display tiles
    through the decoded-slab cache; :meth:`read` decodes the whole volume.
    """

    def __init__(
        self,
        *,
        path: Path,
        array: blosc2.NDArray,
        slabs: DecodedSlabs | None,
        token: tuple,
    ) -> None:
        self.path = path
        self._array = array
        self._slabs = slabs
        self._token = token
        self.shape: tuple[int, int, int] = tuple(int(n) for n in array.shape[::-1])
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3
        #: storage (k, j, i) block extents: the unit one plane read decodes.
        self.blocks: tuple[int, int, int] = tuple(int(b) for b in array.blocks)

    @property
    def nbytes(self) -> int:
        """Decoded size in bytes."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def k_step(self) -> int:
        """A good number of k-slices to read at a time (whole blocks, a few MB decoded)."""
        per_block = self.blocks[0] * self.shape[0] * self.shape[1] * self.dtype.itemsize
        return self.blocks[0] * max(1, (16 << 20) // max(1, per_block))

    def _decode(self, storage_key: tuple) -> np.ndarray:
        try:
            return np.asarray(self._array[storage_key])
        except RuntimeError as exc:
            raise StoreError(
                f"{_shown(self.path)}: a block cannot be decoded (the file is damaged)",
                path=self.path,
            ) from exc

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a 3D volume: {key!r}")
        for item, n in zip(key, self.shape, strict=True):
            if isinstance(item, slice):
                if item.step not in (None, 1):
                    raise IndexError("a stored volume is sliced with step 1 only")
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not -n <= item < n:
                    raise IndexError(f"index {item} out of range 0-{n - 1}")
            else:
                raise IndexError(f"unsupported index {item!r}")
        key = tuple(
            item if isinstance(item, slice) else int(item) % n
            for item, n in zip(key, self.shape, strict=True)
        )
        kept = [a for a, item in enumerate(key) if isinstance(item, slice)]
        decoded = self._decode(key[::-1])  # (k, j, i) order, integer axes dropped
        return decoded.transpose(tuple(range(decoded.ndim))[::-1]) if len(kept) > 1 else decoded

    def read(self) -> np.ndarray:
        """The whole RAS+ volume, decoded (a (k, j, i) C-order array seen transposed)."""
        return self._decode((slice(None),) * 3).T

    def voxel(self, voxel: tuple[int, int, int]):
        """The value at RAS voxel (i, j, k): decodes one block."""
        i, j, k = (int(v) for v in voxel)
        return self[i, j, k][()]

    def tile(self, *, plane: str, index: int) -> np.ndarray:
        """The ``plane`` tile at slice ``index`` in display orientation (as
        :func:`.display.slice_tile` of the RAS volume), read-only."""
        index = display.check_index(self.shape, plane=plane, index=index)
        axis = _STORAGE_AXIS[display.NORMAL_AXIS[plane]]
        extent = self.blocks[axis]
        start = index - index % extent
        key = (self._token, axis, start)
        slab = None
        if self._slabs is not None:
            slab = self._slabs.get(key)
            stepping = slab is None and any(
                self._slabs.recalls((self._token, axis, index + d))
                and self._slabs.recalls((self._token, axis, index + 2 * d))
                for d in (-1, 1)
            )
            self._slabs.remember((self._token, axis, index))
            if stepping:
                stop = min(start + extent, self._array.shape[axis])
                decoded = self._decode(_along(axis, slice(start, stop)))
                # Kept with the sliced axis first, so that each plane of the slab is contiguous.
                slab = np.ascontiguousarray(np.moveaxis(decoded, axis, 0))
                slab.flags.writeable = False
                self._slabs.put(key, slab)
        if slab is None:
            section = self._decode(_along(axis, index))
            section.flags.writeable = False
        else:
            section = slab[index - start]
        # A storage-order (k, j, i) section lists the remaining RAS axes in reverse order, so
        # display.to_display (``s[::-1, ::-1].T`` of the RAS section) is ``[::-1, ::-1]`` of it.
        return section[::-1, ::-1]


def _along(axis: int, item) -> tuple:
    """A storage index selecting ``item`` along ``axis`` and everything along the others."""
    return (slice(None),) * axis + (item,)


class DecodedSlabs:
    """A thread-safe LRU cache of decoded slabs (arrays), bounded by ``max_bytes`` in total; an
    array larger than the bound is not kept. It also remembers the last ``recent`` keys passed to
    :meth:`remember` (which planes were read)."""

    def __init__(self, max_bytes: int, *, recent: int = 64) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._recent: OrderedDict[tuple, None] = OrderedDict()
        self._recent_limit = recent
        self._bytes = 0
        self._mutex = threading.Lock()

    def remember(self, key: tuple) -> None:
        with self._mutex:
            self._recent[key] = None
            self._recent.move_to_end(key)
            while len(self._recent) > self._recent_limit:
                self._recent.popitem(last=False)

    def recalls(self, key: tuple) -> bool:
        """Whether ``key`` is among the last ``recent`` remembered."""
        with self._mutex:
            return key in self._recent

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def get(self, key: tuple) -> np.ndarray | None:
        with self._mutex:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._mutex:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
