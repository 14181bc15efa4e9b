"""Settings as ``load_settings`` reads them: a config file that is missing, or holds
a key that is no setting, stops the process with one line naming the file and key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfygate.config import Settings, load_settings
from comfygate.domain.errors import ValidationFailedError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("COMFYGATE_"):
            monkeypatch.delenv(name)


def _with_file(monkeypatch: pytest.MonkeyPatch, path: Path, text: str | None) -> None:
    if text is not None:
        path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("COMFYGATE_CONFIG_FILE", str(path))


def _refusal(**overrides: object) -> ValidationFailedError:
    with pytest.raises(ValidationFailedError) as caught:
        load_settings(**overrides)
    return caught.value


def test_the_config_file_s_settings_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _with_file(monkeypatch, tmp_path / "c.toml", 'port = 9001\ncomfyui_urls = "http://gpu:8188"\n')
    monkeypatch.setenv("COMFYGATE_PORT", "9002")  # the environment wins over the file
    settings = load_settings()
    assert (settings.port, settings.comfyui_urls) == (9002, "http://gpu:8188")


def test_a_missing_config_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    _with_file(monkeypatch, missing, None)
    refused = _refusal()
    assert refused.message == (f"the config file {missing} (COMFYGATE_CONFIG_FILE) does not exist")


def test_unknown_keys_in_the_config_file_are_named_with_the_right_spelling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    _with_file(monkeypatch, path, 'COMFYGATE_DATABASE_URL = "sqlite://"\nprot = 1\nport = 2\n')
    refused = _refusal()
    assert refused.message == (
        f"the config file {path} has unknown settings:"
        " COMFYGATE_DATABASE_URL (did you mean database_url?), prot"
    )


def test_a_config_file_that_is_not_toml_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    _with_file(monkeypatch, path, "port = = 1\n")
    assert _refusal().message == (
        f"the config file {path} is not valid TOML: Invalid value (at line 1, column 8)"
    )


def test_every_dict_setting_that_is_not_json_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYGATE_PAYMENT_WEBHOOK_SECRETS", "notjson")
    monkeypatch.setenv("COMFYGATE_JOB_CONCURRENCY_PER_CAPABILITY", "colorize.person=1")
    refused = _refusal()
    assert refused.message == "the configuration is invalid"
    assert [problem.split(":")[0] for problem in refused.errors] == [
        "COMFYGATE_JOB_CONCURRENCY_PER_CAPABILITY",
        "COMFYGATE_PAYMENT_WEBHOOK_SECRETS",
    ]
    assert "not valid JSON" in refused.errors[0]
    assert "notjson" not in str(refused.errors)  # values may be secrets


@pytest.mark.parametrize(
    "url", ["redis://cache:6379/0", "rediss://:pw@cache", "unix:///run/redis.sock"]
)
def test_redis_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("COMFYGATE_REDIS_URL", url)
    assert load_settings().redis_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nonsense", "not a Redis URL: it starts redis://, rediss:// or unix://"),
        ("http://:secret@cache", "not a Redis URL: it starts redis://, rediss:// or unix://"),
        ("redis://cache:port", "Port could not be cast to integer value as 'port'"),
    ],
)
def test_a_redis_url_that_is_not_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("COMFYGATE_REDIS_URL", url)
    assert _refusal().errors == [f"COMFYGATE_REDIS_URL: {problem}"]


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ("notaurl", "'notaurl' is not an http(s) URL with a host, e.g. http://gpu1:8188"),
        ("http://gpu1:8188, gpu2:8188", "'gpu2:8188' is not an http(s) URL with a host"),
        ("http://", "'http://' is not an http(s) URL with a host"),
        ("http://gpu1:port", "'http://gpu1:port': Port could not be cast to integer"),
    ],
)
def test_comfyui_urls_that_are_not_http_urls_are_refused(
    monkeypatch: pytest.MonkeyPatch, urls: str, problem: str
) -> None:
    monkeypatch.setenv("COMFYGATE_COMFYUI_URLS", urls)
    [error] = _refusal().errors
    assert error.startswith(f"COMFYGATE_COMFYUI_URLS: {problem}")


def test_comfyui_urls_and_pools_with_http_urls_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pools = '[[comfyui_pools."colorize.person"]]\nurl = "https://gpu3.example/comfy/"\n'
    _with_file(monkeypatch, tmp_path / "c.toml", pools)
    monkeypatch.setenv("COMFYGATE_COMFYUI_URLS", "http://gpu1:8188, http://10.0.0.2:8188/,")
    settings = load_settings()
    assert settings.comfyui_url_list() == ["http://gpu1:8188", "http://10.0.0.2:8188/"]
    assert settings.comfyui_pools["colorize.person"][0].url == "https://gpu3.example/comfy/"


def test_a_pool_instance_that_is_not_an_http_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _with_file(monkeypatch, tmp_path / "c.toml", '[[comfyui_pools."c"]]\nurl = "gpu1:8188"\n')
    [error] = _refusal().errors
    assert "'gpu1:8188' is not an http(s) URL with a host" in error


@pytest.mark.parametrize(
    ("given", "level"),
    [("DEBUG", "debug"), ("Warning", "warning"), ("WARN", "warning"), ("critical", "critical"),
     ("", "info")],
)  # fmt: skip
def test_the_log_level_is_read_whatever_its_case(
    monkeypatch: pytest.MonkeyPatch, given: str, level: str
) -> None:
    monkeypatch.setenv("COMFYGATE_LOG_LEVEL", given)
    assert load_settings().log_level == level


@pytest.mark.parametrize("given", ["chatty", "notset", "fatal"])
def test_a_log_level_that_is_not_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("COMFYGATE_LOG_LEVEL", given)
    assert _refusal().errors == [
        f"COMFYGATE_LOG_LEVEL: {given!r} is not a log level: debug, info, warning, error or"
        " critical"
    ]


def test_auto_migrate_is_on_unless_the_environment_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().auto_migrate is True
    monkeypatch.setenv("COMFYGATE_AUTO_MIGRATE", "false")
    assert load_settings().auto_migrate is False
    monkeypatch.setenv("COMFYGATE_AUTO_MIGRATE", "maybe")
    assert _refusal().errors == [
        "COMFYGATE_AUTO_MIGRATE: Input should be a valid boolean, unable to interpret input"
    ]


def test_a_gateways_name_on_its_jobs_is_its_instance_id_or_its_host_and_data_dir(
    tmp_path: Path,
) -> None:

    default = Settings(data_dir=tmp_path / "data")
    assert default.runner_id() == f"{socket.gethostname()}:{(tmp_path / 'data').resolve()}"
    assert Settings(data_dir=tmp_path, instance_id="gw-7").runner_id() == "gw-7"
    with pytest.raises(ValidationError):
        Settings(instance_id="")
