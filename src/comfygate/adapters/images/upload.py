"""Receive an upload: stream it to a temporary file under a size cap, hashing as it goes.

SHA-256 (the duplicate key) and MD5 (recorded, as the seed asks) are computed in the
same pass as the write, so metering never reads the file twice. The async variant
hands each 1 MiB batch to a thread: hashlib releases the GIL for large buffers, so the
event loop keeps serving other requests while a big upload is digested.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from comfygate.domain.errors import EmptyUploadError, UploadTooLargeError
from comfygate.domain.images import ReceivedFile

BATCH_BYTES = 1 << 20


class _Sink:
    """A temporary file plus its running digests; removed unless ``finish`` succeeds."""

    def __init__(self, dest_dir: Path) -> None:
        dest_dir.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=dest_dir, prefix="upload-", suffix=".bin")
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size_bytes = 0

    def write(self, data: bytes | bytearray) -> None:
        self._sha256.update(data)
        self._md5.update(data)
        self._file.write(data)
        self.size_bytes += len(data)

    def finish(self, last: bytes | bytearray = b"") -> ReceivedFile:
        if last:
            self.write(last)
        self._file.close()
        if self.size_bytes == 0:
            raise EmptyUploadError("the upload is empty")
        return ReceivedFile(
            path=self.path,
            size_bytes=self.size_bytes,
            sha256=self._sha256.hexdigest(),
            md5=self._md5.hexdigest(),
        )

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _too_large(max_bytes: int) -> UploadTooLargeError:
    return UploadTooLargeError(f"the upload is larger than {max_bytes} bytes", max_bytes=max_bytes)


async def receive_upload(
    chunks: AsyncIterator[bytes],
    *,
    dest_dir: Path,
    max_bytes: int,
    offload: Callable[..., Awaitable[Any]] = asyncio.to_thread,
) -> ReceivedFile:
    """Write ``chunks`` to a new file in ``dest_dir``; the file is deleted on any error.

    Raises ``UploadTooLargeError`` as soon as more than ``max_bytes`` arrive (the rest
    is not read) and ``EmptyUploadError`` for zero bytes. ``offload`` (like
    ``asyncio.to_thread``) creates and finishes the file, a few system calls each; the
    1 MiB batches of a large upload are hashed and written by ``asyncio.to_thread``.
    """
    sink = await _create_sink(dest_dir, offload)
    try:
        received = 0
        batch = bytearray()
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            batch += chunk
            if len(batch) >= BATCH_BYTES:
                full, batch = batch, bytearray()
                await asyncio.to_thread(sink.write, full)
        # The last batch and the close in one hand-off to a thread: a small upload
        # (one batch) costs two hand-offs in all, the file's creation and this.
        received_file: ReceivedFile = await offload(sink.finish, batch)
        return received_file
    except BaseException:
        # Also on cancellation (client gone): a few syscalls, fine to do inline.
        sink.discard()
        raise


async def _create_sink(dest_dir: Path, offload: Callable[..., Awaitable[Any]]) -> _Sink:
    """A new sink, made by ``offload``. When the caller is canceled meanwhile (the
    client went away) the file is made all the same, in a thread nobody awaits any
    more: it is removed once made, where it was left behind."""
    creating = asyncio.ensure_future(offload(_Sink, dest_dir))
    try:
        sink: _Sink = await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(_discard_made)
        raise
    return sink


def _discard_made(creating: asyncio.Future[_Sink]) -> None:
    if not creating.cancelled() and creating.exception() is None:
        creating.result().discard()


def sweep_stale(dest_dir: Path, *, older_than_s: float = 3600.0) -> int:
    """Remove upload files untouched for ``older_than_s`` (a process killed while it
    received them, say); how many. A housekeeping chore: an upload in progress is
    written to every second or so, and one received is moved or removed at once."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in dest_dir.glob("upload-*.bin"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # removed meanwhile by its own request
            continue
    return removed


def receive_upload_sync(stream: BinaryIO, *, dest_dir: Path, max_bytes: int) -> ReceivedFile:
    """Blocking variant of :func:`receive_upload` for the CLI: reads ``stream`` to EOF."""
    sink = _Sink(dest_dir)
    try:
        while block := stream.read(BATCH_BYTES):
            if sink.size_bytes + len(block) > max_bytes:
                raise _too_large(max_bytes)
            sink.write(block)
        return sink.finish()
    except BaseException:
        sink.discard()
        raise
