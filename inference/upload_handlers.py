"""Receiving uploads: every file streams to disk in chunks as it arrives (Django's default would
keep small files in memory), and the whole request stops at the size limit.

Install with :func:`install` before ``request.POST``/``request.FILES`` (or DRF's
``request.data``) is first read. Files land under a temporary name (ctspine.atomic.temp_name)
in ``incoming/<random>/`` under the media root, on the file system of their final place, and are
renamed to ``<field>-<safe name>`` once complete; :meth:`StreamingUploadHandler.discard` removes
whatever is left.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from ctspine.atomic import temp_name
from inference.uploads import IncomingFile, safe_file_name


class StreamedFile(UploadedFile):
    """An uploaded file that lies complete on disk at ``path`` (not opened: it is checked and
    moved by path, never read through this object)."""

    def __init__(self, path: Path, *, name: str, size: int, content_type, charset):
        super().__init__(None, name, content_type, size, charset)
        self.path = path

    def temporary_file_path(self) -> str:
        return str(self.path)

    def incoming(self) -> IncomingFile:
        """The file on disk with the user's name for it."""
        return IncomingFile(path=self.path, name=self.name)


class StreamingUploadHandler(FileUploadHandler):
    """Writes each file of a multipart request straight to disk, at most ``limit_bytes`` for the
    files of the request together; past that it deletes what it wrote and stops the upload
    (``too_large`` tells the view)."""

    def __init__(self, request=None, *, directory: Path, limit_bytes: int):
        super().__init__(request)
        self.directory = Path(directory) / uuid.uuid4().hex
        self.limit_bytes = limit_bytes
        self.received = 0
        self.too_large = False
        self._partial: Path | None = None
        self._complete: Path | None = None
        self._sink = None

    def new_file(self, field_name, file_name, content_type, content_length, charset=None,
                 content_type_extra=None):  # fmt: skip
        super().new_file(
            field_name, file_name, content_type, content_length, charset, content_type_extra
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        # The user's name, made safe and unique in the folder; the field name keeps it unique.
        self._complete = self.directory / f"{field_name}-{safe_file_name(file_name)}"
        self._partial = temp_name(self._complete)
        self._sink = open(self._partial, "wb")  # closed in file_complete or discard

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit_bytes:
            self.too_large = True
            self.discard()
            raise StopUpload(connection_reset=False)
        self._sink.write(raw_data)
        return None  # consumed: no later handler sees it

    def file_complete(self, file_size):
        self._sink.close()
        # Streamed chunk by chunk, so not atomic_write; the rename only marks the file complete
        # for this request, which moves it into the upload's folder or deletes it (no fsync).
        complete = self._complete
        self._partial.rename(complete)
        self._partial = self._sink = self._complete = None
        return StreamedFile(
            complete,
            name=safe_file_name(self.file_name),
            size=file_size,
            content_type=self.content_type,
            charset=self.charset,
        )

    def upload_interrupted(self):
        self.discard()

    def discard(self) -> None:
        """Remove every file this request received that nobody moved away."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        shutil.rmtree(self.directory, ignore_errors=True)


def install(request, *, directory: Path, limit_bytes: int) -> StreamingUploadHandler:
    """Make ``request`` stream its files to disk through one :class:`StreamingUploadHandler`."""
    handler = StreamingUploadHandler(request, directory=directory, limit_bytes=limit_bytes)
    request.upload_handlers = [handler]
    return handler


CHUNKED_MESSAGE = (
    "The upload was sent in chunks (Transfer-Encoding: chunked) without its length, which this"
    " server cannot read. Send it with a Content-Length: e.g. curl -F image=@ct.nii.gz from a"
    " file, not from a pipe."
)


def sent_in_chunks(request) -> bool:
    """The body comes chunked, without a Content-Length: Django would read it as empty (and
    answer "no file was submitted"), so it is refused with :data:`CHUNKED_MESSAGE` instead."""
    encoding = request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    return "chunked" in encoding and not request.META.get("CONTENT_LENGTH")


def declared_too_large(request, *, limit_bytes: int) -> bool:
    """The request says up front (Content-Length) that its body exceeds the limit; it can be
    refused before a byte of it is read. Allows 1 MiB for the multipart envelope and fields."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > limit_bytes + (1 << 20)
