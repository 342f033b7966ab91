"""Code run in spawned processes by the volume cache tests (importable by module name)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctspine import volume_cache


def count_conversions(counter: Path, delay_s: float = 0.0) -> None:
    """Patch this process's VolumeCache to append a line to ``counter`` for each conversion."""
    convert = volume_cache.VolumeCache._convert

    def counting(self, key, **kwargs):
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()} {key}\n")
        time.sleep(delay_s)  # hold the lock long enough for the other process to queue behind it
        return convert(self, key, **kwargs)

    volume_cache.VolumeCache._convert = counting


def get_volume(root: str, source: str, counter: str, barrier, results) -> None:
    count_conversions(Path(counter), delay_s=0.5)
    cache = volume_cache.VolumeCache(root, max_bytes=1 << 30)
    barrier.wait()
    volume = cache.get(source)
    cache.wait()
    results.put((os.getpid(), volume.shape, int(volume.read().astype("int64").sum())))
