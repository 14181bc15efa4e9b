"""Receiving uploads: streamed to disk with digests, capped, cleaned up on failure."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from comfygate.adapters.images import receive_upload, receive_upload_sync
from comfygate.adapters.images.upload import BATCH_BYTES, sweep_stale
from comfygate.domain.errors import EmptyUploadError, UploadTooLargeError
from comfygate.domain.images import ReceivedFile


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def _receive(parts: Iterable[bytes], dest_dir: Path, max_bytes: int) -> ReceivedFile:
    return asyncio.run(receive_upload(_chunks(parts), dest_dir=dest_dir, max_bytes=max_bytes))


def _payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.mark.parametrize("size", [1, 1000, BATCH_BYTES, BATCH_BYTES * 2 + 12_345])
def test_async_upload_is_written_and_digested(tmp_path: Path, size: int) -> None:
    data = _payload(size)
    parts = [data[i : i + 65_536] for i in range(0, len(data), 65_536)]

    received = _receive(parts, tmp_path / "uploads", max_bytes=size)

    assert received.path.parent == tmp_path / "uploads"
    assert received.path.read_bytes() == data
    assert received.size_bytes == size
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.md5 == hashlib.md5(data).hexdigest()


def test_sync_upload_matches_async(tmp_path: Path) -> None:
    data = _payload(BATCH_BYTES + 7)

    sync = receive_upload_sync(io.BytesIO(data), dest_dir=tmp_path, max_bytes=len(data))
    async_ = _receive([data], tmp_path, max_bytes=len(data))

    assert (sync.sha256, sync.md5, sync.size_bytes) == (
        async_.sha256,
        async_.md5,
        async_.size_bytes,
    )
    assert sync.path != async_.path


def test_too_large_upload_is_refused_and_removed(tmp_path: Path) -> None:
    consumed: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for index in range(1000):
            consumed.append(index)
            yield b"x" * 1000

    with pytest.raises(UploadTooLargeError) as caught:
        asyncio.run(receive_upload(endless(), dest_dir=tmp_path, max_bytes=10_500))

    assert caught.value.details["max_bytes"] == 10_500
    assert len(consumed) == 11  # stops reading at the first chunk past the cap
    assert list(tmp_path.iterdir()) == []


def test_sync_too_large_upload_is_removed(tmp_path: Path) -> None:
    with pytest.raises(UploadTooLargeError):
        receive_upload_sync(io.BytesIO(b"x" * 101), dest_dir=tmp_path, max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_empty_upload_is_refused_and_removed(tmp_path: Path) -> None:
    with pytest.raises(EmptyUploadError):
        _receive([], tmp_path, max_bytes=100)
    with pytest.raises(EmptyUploadError):
        _receive([b"", b""], tmp_path, max_bytes=100)
    with pytest.raises(EmptyUploadError):
        receive_upload_sync(io.BytesIO(b""), dest_dir=tmp_path, max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_stream_leaves_no_file(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"abc" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(receive_upload(broken(), dest_dir=tmp_path, max_bytes=10**6))
    assert list(tmp_path.iterdir()) == []


def test_a_cancelled_upload_leaves_no_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield b"abc"
            gate.set()
            await asyncio.sleep(3600)
            yield b"never"

        task = asyncio.create_task(receive_upload(stalled(), dest_dir=tmp_path, max_bytes=10**6))
        await gate.wait()
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file exists meanwhile
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []


def test_a_request_canceled_while_its_file_is_made_leaves_no_file(tmp_path: Path) -> None:
    """The file is made in a thread the canceled request no longer awaits: it was left
    behind in the upload folder."""
    making, go_on = threading.Event(), threading.Event()

    def slow_to_make(make: Any, *args: Any) -> Any:
        making.set()
        go_on.wait(10)
        return make(*args)

    async def scenario() -> None:
        offload = functools.partial(asyncio.to_thread, slow_to_make)
        upload = asyncio.create_task(
            receive_upload(_chunks([b"x"]), dest_dir=tmp_path, max_bytes=10, offload=offload)
        )
        await asyncio.to_thread(making.wait, 10)
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        go_on.set()
        for _ in range(500):  # the thread finishes making it, then it is removed
            await asyncio.sleep(0.01)
            if making.is_set() and not list(tmp_path.iterdir()):
                break

    asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []


def test_stale_upload_files_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    stale, fresh, other = (tmp_path / n for n in ("upload-a.bin", "upload-b.bin", "keep.txt"))
    for path in (stale, fresh, other):
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    assert sweep_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "upload-b.bin"]
