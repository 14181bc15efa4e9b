"""Job folders on local disk and HMAC share links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from comfygate.adapters.storage.local import (
    HmacShareLinks,
    LocalResultStorage,
    load_or_create_secret,
)
from comfygate.domain.errors import ShareLinkExpiredError, ShareLinkInvalidError
from comfygate.domain.ids import new_id

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_a_job_owns_its_folder(tmp_path: Path) -> None:
    storage = LocalResultStorage(tmp_path / "jobs")
    job_id = new_id("job")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"img")
    name = storage.adopt_input(job_id, upload, suffix="png")
    assert not upload.exists()
    assert storage.input_path(job_id, name).read_bytes() == b"img"
    engine_out = tmp_path / "elsewhere.PNG"
    engine_out.write_bytes(b"result")
    result = storage.result_name(job_id, engine_out)
    assert result == "result.png" and not engine_out.exists()
    path = storage.result_path(job_id, result)
    assert path is not None and path.read_bytes() == b"result"
    assert storage.output_dir(job_id).is_dir()
    storage.delete_input(job_id, name)
    assert not storage.input_path(job_id, name).exists()
    storage.delete_job(job_id)
    assert storage.result_path(job_id, result) is None
    assert not (tmp_path / "jobs" / job_id).exists()


@pytest.mark.parametrize("bad", ["../etc", "job_x/../../y", "", "JOB_ABC"])
def test_paths_are_never_built_from_odd_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        LocalResultStorage(tmp_path).output_dir(bad)


def test_share_links_verify_until_they_expire() -> None:
    links = HmacShareLinks(b"0123456789abcdef-secret")
    token = links.sign("job_abc", expires_at=NOW + timedelta(minutes=5))
    assert links.verify(token, now=NOW) == "job_abc"
    with pytest.raises(ShareLinkExpiredError):
        links.verify(token, now=NOW + timedelta(minutes=5))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace("job_abc", "job_abd"),
        lambda t: ".".join([*t.split(".")[:1], str(int(t.split(".")[1]) + 1), t.split(".")[2]]),
        lambda t: t[:-2] + "xx",
        lambda t: t.split(".")[0],
        lambda t: "job_abc.soon.mac",
    ],
)
def test_forged_or_mangled_tokens_are_refused(tamper: object) -> None:
    links = HmacShareLinks(b"0123456789abcdef-secret")
    token = links.sign("job_abc", expires_at=NOW + timedelta(minutes=5))
    with pytest.raises(ShareLinkInvalidError):
        links.verify(tamper(token), now=NOW)  # type: ignore[operator]


def test_another_secret_does_not_verify() -> None:
    token = HmacShareLinks(b"0123456789abcdef-one").sign("job_a", expires_at=NOW + timedelta(1))
    with pytest.raises(ShareLinkInvalidError):
        HmacShareLinks(b"0123456789abcdef-two").verify(token, now=NOW)


def test_the_default_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "data")
    assert len(first) >= 32
    assert load_or_create_secret(tmp_path / "data") == first
    assert (tmp_path / "data" / "share-secret").stat().st_mode & 0o777 == 0o600
    links = HmacShareLinks(lambda: load_or_create_secret(tmp_path / "data"))
    token = links.sign("job_a", expires_at=NOW + timedelta(hours=1))
    assert HmacShareLinks(first).verify(token, now=NOW) == "job_a"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        HmacShareLinks(b"short").sign("job_a", expires_at=NOW)
