"""Settings: one frozen object, read once from ``COMFYGATE_*`` variables and an
optional TOML config file (``COMFYGATE_CONFIG_FILE``), built in ``bootstrap``.

Nothing here is read at import time; call ``load_settings()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Everything an operator can configure. Environment variables win over the file."""

    model_config = SettingsConfigDict(env_prefix="COMFYGATE_", frozen=True, extra="ignore")

    database_url: str = "sqlite:///./comfygate.db"
    data_dir: Path = Path("./comfygate-data")

    # money
    hold_ttl_s: int = Field(default=3600, gt=0, description="holds expire after this")
    quote_lock_s: int = Field(default=600, gt=0, description="a locked quote lasts this long")
    price_book_file: Path | None = Field(
        default=None, description="price book TOML used instead of the shipped default"
    )
    plans_file: Path | None = Field(default=None, description="plan catalog TOML override")

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
        config_file = os.environ.get("COMFYGATE_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once (environment, then config file, then defaults)."""
    return Settings(**overrides)
