"""The process-wide volume cache and what a tile view shows (an image and its label maps)."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ctspine.volume_cache import CacheLocation, VolumeCache

_lock = threading.Lock()
_caches: dict[CacheLocation, VolumeCache] = {}


def cache_location() -> CacheLocation:
    """The configured cache folder and budget (CTSPINE_CACHE_DIR, CTSPINE_CACHE_MAX_GB)."""
    return CacheLocation(
        str(settings.CTSPINE_CACHE_DIR), int(settings.CTSPINE_CACHE_MAX_GB * 1024**3)
    )


def volume_cache() -> VolumeCache:
    """One VolumeCache per process (it keeps stores open and recently decoded slabs in memory,
    which is what makes neighbouring tiles cheap)."""
    key = cache_location()
    with _lock:
        cache = _caches.get(key)
        if cache is None:
            # Each store's CRC-32 is checked when it is opened (not per tile; once per store
            # version and boot), so a store changed in place is re-converted, never served.
            cache = _caches[key] = VolumeCache(
                key.root, key.max_bytes, slab_cache_bytes=settings.CTSPINE_SLAB_CACHE_MB << 20
            )
        return cache


@dataclass(frozen=True)
class VolumeSet:
    """The files behind one viewer: an image, the label map drawn by default (a case's labels or a
    job's prediction) and optionally a reference label map (ground truth) to compare with."""

    image: Path
    labels: Path | None = None
    reference: Path | None = None
    public: bool = True  # dataset tiles may be cached by shared caches; uploads may not

    @property
    def layers(self) -> tuple[str, ...]:
        if self.labels is not None and self.reference is not None:
            return ("labels", "reference", "compare")
        return ("labels",)

    def version(self) -> str:
        """Changes whenever one of the files changes (path, size, mtime): used in ETags and as
        the ``v`` parameter that makes a tile URL immutable."""
        digest = hashlib.sha1()
        for path in (self.image, self.labels, self.reference):
            if path is None:
                digest.update(b"-")
                continue
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns};".encode())
        return digest.hexdigest()[:16]
