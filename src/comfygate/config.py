"""Settings: one frozen object, read once from ``COMFYGATE_*`` variables and an
optional TOML config file (``COMFYGATE_CONFIG_FILE``), built in ``bootstrap``.

Nothing here is read at import time; call ``load_settings()``.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from comfygate.domain.errors import ValidationFailedError

ENV_PREFIX = "COMFYGATE_"
CONFIG_FILE_VARIABLE = f"{ENV_PREFIX}CONFIG_FILE"
REDIS_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_LEVEL_ALIASES = {"warn": "warning", "": "info"}
"""What the standard library also takes (``WARN``), and unset."""


class ComfyUIInstanceSettings(BaseModel):
    """One ComfyUI instance of a per-capability pool (``[[comfyui_pools."cap"]]``)."""

    model_config = ConfigDict(frozen=True)

    url: str
    auth_header: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        check_http_url(value)
        return value


def check_http_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is an http(s) URL with a host (a ComfyUI
    server): anything else would only show as a pool that never comes up."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{url.strip()!r} is not an http(s) URL with a host, e.g. http://gpu1:8188"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is no port
    except ValueError as error:
        raise ValueError(f"{url.strip()!r}: {error}") from None


class Settings(BaseSettings):
    """Everything an operator can configure. Environment variables win over the file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    database_url: str = "sqlite:///./comfygate.db"
    auto_migrate: bool = Field(
        default=True,
        description="every command (serve included) upgrades the schema first; off: only"
        " `init` and `db upgrade` do, and the others refuse a schema unlike the code's",
    )
    data_dir: Path = Path("./comfygate-data")

    # money
    hold_ttl_s: int = Field(default=3600, gt=0, description="holds expire after this")
    quote_lock_s: int = Field(default=600, gt=0, description="a locked quote lasts this long")
    price_book_file: Path | None = Field(
        default=None, description="price book TOML used instead of the shipped default"
    )
    plans_file: Path | None = Field(default=None, description="plan catalog TOML override")
    ledger_batch_max: int | None = Field(
        default=None,
        ge=1,
        description="movements of concurrent requests committed in one transaction (1: off;"
        " default 32 on SQLite, which has one writer at a time anyway, else 1)",
    )

    # gateway (entrypoints/api; cli_gateway)
    host: str = Field(default="127.0.0.1", description="address `comfygate serve` binds")
    port: int = Field(default=8000, ge=0, le=65535, description="port `comfygate serve` binds")
    log_level: str = Field(default="info", description="debug, info, warning, error")
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="requests per minute per API key (0: no limit)"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for rate limits shared by many gateways (scale-out)"
    )
    auth_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="verified keys are cached this long (revocation lag)"
    )
    # uploads (quotes and jobs): checked while streaming / from the header
    max_upload_bytes: int = Field(default=30 * 1024 * 1024, gt=0, description="upload size cap")
    max_image_pixels: int = Field(
        default=50_000_000, gt=0, le=2**31 - 1, description="pixel cap (decompression bombs)"
    )
    min_image_side_px: int = Field(default=16, gt=0, description="smallest accepted side")
    payment_webhook_secrets: dict[str, str] = Field(
        default_factory=dict,
        description='HMAC secrets of payment providers with webhooks, e.g. {"acme": "..."}',
    )

    # ComfyUI workers (adapters/comfyui; docs/comfyui.md)
    comfyui_urls: str = Field(
        default="",
        description="comma-separated ComfyUI base URLs serving every capability with a pack",
    )
    comfyui_auth_header: str | None = Field(
        default=None, description="'Name: value' header sent to the comfyui_urls instances"
    )
    comfyui_pools: dict[str, list[ComfyUIInstanceSettings]] = Field(
        default_factory=dict,
        description="per-capability instances (config file), override comfyui_urls",
    )
    comfyui_workflows_dir: Path | None = Field(
        default=None, description="extra workflow packs (added to, or replacing, the shipped ones)"
    )
    comfyui_timeout_s: float = Field(
        default=300.0, gt=0, description="longest a ComfyUI job may run"
    )
    comfyui_max_attempts: int = Field(default=3, ge=1, description="instances tried per job")
    comfyui_warm_up: bool = Field(default=True, description="run one warm-up job per pack at start")
    comfyui_probe_interval_s: float = Field(
        default=5.0, gt=0, description="probe period for down instances"
    )

    # jobs: dispatch, settlement, results (services/jobs.py, dispatcher.py)
    job_timeout_s: float = Field(
        default=300.0, gt=0, description="longest a job may run on a built-in engine"
    )
    job_concurrency: int = Field(default=2, ge=1, description="jobs run at once per capability")
    job_concurrency_per_capability: dict[str, int] = Field(
        default_factory=dict, description='per-capability overrides, e.g. {"colorize.building": 1}'
    )
    dedup_window_s: int = Field(
        default=86_400, ge=0, description="same image re-submitted within this returns the job"
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="this gateway's name on the jobs it runs (default: host name and data"
        " dir); each gateway on one database needs its own, the same across its restarts",
    )
    job_lease_s: float = Field(
        default=30.0,
        ge=3.0,
        description="a running job is held this long, renewed a third of it ahead; other"
        " gateways take it over once it runs out",
    )
    result_retention_s: int = Field(
        default=7 * 86_400, gt=0, description="results are deleted this long after the job"
    )
    share_secret: str | None = Field(
        default=None,
        description="HMAC secret of result share links (default: made once in data_dir)",
    )
    share_max_s: int = Field(default=7 * 86_400, gt=0, description="longest a share link lasts")
    onnx_model_path: Path | None = Field(
        default=None, description="DDColor ONNX export; enables the ddcolor-onnx engine"
    )

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().lower()
        level = _LOG_LEVEL_ALIASES.get(level, level)
        if level not in LOG_LEVELS:
            raise ValueError(
                f"{value!r} is not a log level: debug, info, warning, error or critical"
            )
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            # The value is not echoed: a Redis URL may carry a password.
            raise ValueError("not a Redis URL: it starts redis://, rediss:// or unix://")
        parts.port  # noqa: B018 - raises ValueError for a port that is no port
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _comfyui_urls(cls, value: str) -> str:
        for url in value.split(","):
            if url.strip():
                check_http_url(url)
        return value

    def comfyui_url_list(self) -> list[str]:
        """``comfyui_urls`` as a list."""
        return [u.strip() for u in self.comfyui_urls.split(",") if u.strip()]

    def runner_id(self) -> str:
        """``instance_id``, or the host's name and the data dir's path: the same for a
        gateway across its restarts (so it takes back its own jobs at once), and apart
        for gateways on other hosts or with other data dirs."""
        if self.instance_id:
            return self.instance_id
        return f"{socket.gethostname()}:{self.data_dir.resolve()}"[:200]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            data = read_config_file(Path(config_file), known=set(settings_cls.model_fields))
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
        return tuple(sources)


def read_config_file(path: Path, *, known: set[str]) -> dict[str, Any]:
    """The settings in the TOML file at ``path``.

    Raises ``ValidationFailedError`` (one line, naming the file) when it is missing or
    unreadable, or holds keys that are no setting: a misspelt setting silently left at
    its default would be worse than not starting.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _config_error(f"{path} ({CONFIG_FILE_VARIABLE}) does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise _config_error(f"{path} ({CONFIG_FILE_VARIABLE}) cannot be read: {reason}") from None
    except tomllib.TOMLDecodeError as error:
        raise _config_error(f"{path} is not valid TOML: {error}") from None
    unknown = [key for key in data if key not in known]
    if unknown:
        named = ", ".join(_unknown_key(key, known) for key in unknown)
        raise _config_error(f"{path} has unknown settings: {named}")
    return data


def _unknown_key(key: str, known: set[str]) -> str:
    """``key``, with the file's spelling when it is a variable's (``COMFYGATE_PORT``)."""
    plain = key.lower().removeprefix(ENV_PREFIX.lower())
    return f"{key} (did you mean {plain}?)" if plain in known else key


def _config_error(message: str) -> ValidationFailedError:
    return ValidationFailedError(f"the config file {message}", errors=[])


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once (environment, then config file, then defaults).

    Raises ``ValidationFailedError`` naming every bad setting by its variable.
    """
    problems = _environment_json_problems()
    if problems:
        raise ValidationFailedError("the configuration is invalid", errors=problems)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = [
            f"{ENV_PREFIX}{'.'.join(str(part) for part in e['loc']).upper()}: "
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        ]
        raise ValidationFailedError("the configuration is invalid", errors=problems) from None
    except SettingsError as error:  # one the check above did not foresee
        problem = f"{error} ({error.__cause__})" if error.__cause__ else str(error)
        raise ValidationFailedError("the configuration is invalid", errors=[problem]) from None


def _environment_json_problems() -> list[str]:
    """Each dict-valued setting whose variable is not JSON (pydantic-settings stops at
    the first, with a ``SettingsError`` that names the field, not the variable)."""
    structured = {
        f"{ENV_PREFIX}{name.upper()}"
        for name, field in Settings.model_fields.items()
        if get_origin(field.annotation) in (dict, list)
    }
    problems = []
    for variable, value in sorted(os.environ.items()):
        if variable.upper() in structured:
            try:
                json.loads(value)
            except ValueError as error:
                problems.append(
                    f"{variable}: not valid JSON ({error}); in the environment this setting"
                    " is a JSON object"
                )
    return problems
