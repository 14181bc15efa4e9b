"""Receiving uploads: streamed to disk with digests, capped, cleaned up on failure."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from comfygate.adapters.images import receive_upload, receive_upload_sync
from comfygate.adapters.images.upload import BATCH_BYTES
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
