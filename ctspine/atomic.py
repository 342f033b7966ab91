"""Atomic file writes and per-key ``flock`` locks, for every writer in the project.

Atomic means: write a temporary file with a unique name in the same directory, fsync it (unless
the caller checks its files otherwise, see ``durable``), then ``os.replace`` it over the target, so
readers see the old file or the new one, never a half-written one, and two writers never share a
temporary file.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (same directory, so the rename stays atomic)."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(
    path: Path, content: bytes | Callable[[BinaryIO], object], *, durable: bool = True
) -> Path:
    """Replace ``path`` with ``content`` atomically; returns ``path``.

    ``content`` is the bytes to write, or a callable that writes them into the binary file it is
    given (opened ``w+b``, so it may also seek, read back or memory-map it). Whatever the callable
    raises aborts the write: the temporary file is removed and ``path`` is left as it was.
    ``durable`` as in :func:`atomic_replace`.
    """

    def write(temp: Path) -> None:
        with open(temp, "w+b") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content)

    return atomic_replace(path, write, durable=durable)


def atomic_replace(path: Path, write: Callable[[Path], object], *, durable: bool = True) -> Path:
    """Replace ``path`` atomically with the file that ``write`` creates at the temporary path it
    is given (for libraries that write files by name); returns ``path``. Whatever ``write``
    raises aborts the replacement: the temporary file is removed and ``path`` is left as it was.

    ``durable`` fsyncs the new file before the rename, so that after a power loss ``path`` holds
    the old or the new content. Without it a crash can leave the new name with missing or stale
    bytes: only for files whose readers detect that (the volume cache checks each store's size and
    CRC-32 when it opens it, and converts it again).
    """
    path = Path(path)
    temp = temp_name(path)
    try:
        write(temp)
        if durable:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write` ``text`` as UTF-8, creating the folder; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text.encode("utf-8"))


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that renames inside it survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_file(path: Path, *, blocking: bool = True) -> int | None:
    """Take an exclusive ``flock`` on ``path`` (created if absent); returns the fd, which releases
    the lock when closed, or None if ``blocking`` is False and another holder has it.

    Locks are per open file description, so they exclude other processes and other threads of
    this process alike. Lock files may be unlinked by their holder (cache eviction): after locking,
    the fd is checked to still be the file at ``path``, and the lock retried otherwise.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder was deleted (e.g. the cache folder by hand)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
