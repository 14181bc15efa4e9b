"""Job files in a local folder, and signed share links for results.

Layout: ``<root>/<job_id>/input.<ext>`` and ``<root>/<job_id>/result.<ext>``; a job
owns its folder and deleting the job's files removes it. Uploads are received into
``<data_dir>/uploads`` on the same file system, so adopting one is a rename.

Share tokens are ``<job_id>.<expiry epoch s>.<HMAC-SHA256>``: anyone holding one can
fetch that result until it expires, nobody can forge or extend one without the
secret, and nothing about links is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from comfygate.domain.errors import (
    ShareLinkExpiredError,
    ShareLinkInvalidError,
    ValidationFailedError,
)

_JOB_ID = re.compile(r"^[a-z]+_[0-9a-z]{26}$")
_SECRET_FILE = "share-secret"
DATA_DIR_FOLDERS = ("tmp", "jobs")
"""``<data_dir>/tmp`` receives uploads, ``<data_dir>/jobs`` holds ``LocalResultStorage``."""


def check_data_dir(data_dir: Path) -> None:
    """``prepare_data_dir``'s check, creating nothing (for ``/readyz``, several times a
    minute): a data dir whose volume went away must show as not ready, not be made
    again, empty, on another disk."""
    for folder in (data_dir, *(data_dir / name for name in DATA_DIR_FOLDERS)):
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            where = "" if folder == data_dir else f" (its {folder.name}/ folder)"
            raise ValidationFailedError(
                f"the data dir {data_dir} (COMFYGATE_DATA_DIR) is missing or not writable{where}",
                errors=[],
            )


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` and its folders and check that each takes a new file.

    Raises ``ValidationFailedError`` (one line naming the folder and the reason)
    otherwise: run at start, so an unwritable data dir stops the server instead of
    failing every submission (``/readyz`` then runs ``check_data_dir``).
    """
    for folder in (data_dir, *(data_dir / name for name in DATA_DIR_FOLDERS)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as error:
            where = "" if folder == data_dir else f" (its {folder.name}/ folder)"
            raise ValidationFailedError(
                f"the data dir {data_dir} (COMFYGATE_DATA_DIR) is not writable{where}:"
                f" {error.strerror or error}",
                errors=[],
            ) from None


class LocalResultStorage:
    """``ResultStorage`` in a folder on the local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _job_dir(self, job_id: str) -> Path:
        # Job ids come from us, but paths are built from them: refuse anything odd.
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def adopt_input(self, job_id: str, upload: Path, *, suffix: str) -> str:
        folder = self._job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"input.{suffix}"
        os.replace(upload, folder / name)
        return name

    def input_path(self, job_id: str, name: str) -> Path:
        return self._job_dir(job_id) / name

    def output_dir(self, job_id: str) -> Path:
        folder = self._job_dir(job_id) / "out"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def result_name(self, job_id: str, output_path: Path) -> str:
        folder = self._job_dir(job_id)
        name = f"result{output_path.suffix.lower()}"
        target = folder / name
        if output_path.resolve() != target.resolve():
            # Engines may write anywhere (a temp dir, ComfyUI's download): keep a copy
            # we own, then drop theirs.
            shutil.move(str(output_path), target)
        return name

    def result_path(self, job_id: str, name: str) -> Path | None:
        path = self._job_dir(job_id) / name
        return path if path.is_file() else None

    def delete_input(self, job_id: str, name: str) -> None:
        (self._job_dir(job_id) / name).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The share-link secret kept in ``data_dir`` (made on first use, mode 0600), so
    links stay valid across restarts when no secret is configured."""
    path = data_dir / _SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32).encode()
    draft = data_dir / f".{_SECRET_FILE}.{os.getpid()}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    try:
        os.link(draft, path)  # atomic, and fails if another process got there first
    except FileExistsError:
        return path.read_bytes()
    finally:
        draft.unlink(missing_ok=True)
    return secret


class HmacShareLinks:
    """``ShareLinks`` signed with HMAC-SHA256.

    ``secret`` may be a callable, read on first use: building the container (the CLI
    does it for every command) then touches no file.
    """

    def __init__(self, secret: bytes | Callable[[], bytes]) -> None:
        self._source = secret
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            secret = self._source() if callable(self._source) else self._source
            if len(secret) < 16:
                raise ValueError("the share-link secret must be at least 16 bytes")
            self._secret = secret
        return self._secret

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key(), payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, job_id: str, *, expires_at: datetime) -> str:
        payload = f"{job_id}.{int(expires_at.timestamp())}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, *, now: datetime) -> str:
        parts = token.split(".")
        # ASCII only: compare_digest refuses other text (a 500), and int() more than
        # 4,300 digits; an expiry is 10 or 11 of them.
        if not token.isascii() or len(parts) != 3 or not parts[1].isdigit():
            raise ShareLinkInvalidError("this share link is not valid")
        if len(parts[1]) > 12:
            raise ShareLinkInvalidError("this share link is not valid")
        job_id, expiry, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{job_id}.{expiry}")):
            raise ShareLinkInvalidError("this share link is not valid")
        expires_at = datetime.fromtimestamp(int(expiry), tz=UTC)
        if now >= expires_at:
            raise ShareLinkExpiredError(
                "this share link has expired", expired_at=expires_at.isoformat()
            )
        return job_id
