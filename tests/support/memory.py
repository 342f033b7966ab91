"""Peak resident memory of this process around a block of code (Linux ``/proc``), for tests that
show an attack is refused without the allocation it aimed at.

``tracemalloc`` sees only Python's allocator; SimpleITK, zlib and numpy buffers are C
allocations, so the kernel's high-water mark (``VmHWM``) is what counts. Writing ``5`` to
``/proc/self/clear_refs`` resets that mark to the current RSS, so the peak is the block's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} missing from /proc/self/status")


@dataclass
class PeakGrowth:
    """How far (MiB) the process's resident memory rose above its level at the start."""

    mib: float = 0.0


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[PeakGrowth]:
    """Measure the peak RSS growth (MiB) of the block; read ``.mib`` after it."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    start = _status_kib("VmRSS")
    growth = PeakGrowth()
    try:
        yield growth
    finally:
        growth.mib = (_status_kib("VmHWM") - start) / 1024
