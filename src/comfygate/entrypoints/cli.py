"""The ``comfygate`` command line.

A click group with a global ``--database URL``; each area registers its commands
(``cli_ledger``, ``cli_pricing``, ...). Commands print JSON with ``--json`` (those
shapes are an interface other tools call) and exit non-zero with a clear message on
bad input: ``error [code]: message`` on stderr, exit status 1 (``db status`` has two
more: ``cli_db``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn

import click
import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate import bootstrap
from comfygate.adapters.db.engine import create_engine
from comfygate.config import Settings, load_settings
from comfygate.domain.errors import ComfygateError, ValidationFailedError


class AppContext:
    """Builds the container on first use, so ``--help`` touches no database."""

    def __init__(self, database_url: str | None) -> None:
        self._database_url = database_url
        self._settings: Settings | None = None
        self._container: bootstrap.Container | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"database_url": self._database_url} if self._database_url else {}
            self._settings = load_settings(**overrides)
        return self._settings

    def container(self, *, upgrade_schema: bool = False) -> bootstrap.Container:
        """The container, its schema upgraded first when ``upgrade_schema`` or the
        settings' ``auto_migrate`` say so, else checked (``SchemaMismatchError``)."""
        if self._container is None:
            self._container = bootstrap.build(self.settings)
            if upgrade_schema or self.settings.auto_migrate:
                self._container.upgrade_database()
            else:
                self._container.check_database()
        return self._container

    def engine(self) -> Engine:
        """An engine on the settings' database alone (``db`` commands: no container)."""
        if self._engine is None:
            self._engine = create_engine(self.settings.database_url)
        return self._engine

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        if self._engine is not None:
            self._engine.dispose()


def context(ctx: click.Context) -> AppContext:
    """The command line's context (``main`` makes it)."""
    found: AppContext = ctx.find_object(AppContext)  # type: ignore[assignment]
    return found


def app(ctx: click.Context, *, upgrade_schema: bool = False) -> bootstrap.Container:
    """The container for a command: its schema upgraded first (``auto_migrate``, or
    ``upgrade_schema`` for ``init``), or refused unless it is the code's."""
    return context(ctx).container(upgrade_schema=upgrade_schema)


def to_jsonable(value: Any) -> Any:  # noqa: PLR0911 - one case per type
    """Dataclasses, datetimes, Decimals and enums as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def emit(data: Any, *, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Print ``data`` as JSON, or as text for a person."""
    if as_json or human is None:
        click.echo(json.dumps(to_jsonable(data), ensure_ascii=False, indent=None if as_json else 2))
    else:
        click.echo(human(data))


def fail(error: ComfygateError) -> NoReturn:
    click.echo(f"error [{error.code}]: {error.message}", err=True)
    if isinstance(error, ValidationFailedError):
        for problem in error.errors:
            click.echo(f"  - {problem}", err=True)
    sys.exit(1)


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]


class ErrorHandlingGroup(click.Group):
    """Every failure a person can cause or meet ends in one line and exit 1: ours with
    their codes; a database URL that names nothing, a database that cannot be reached
    and a file that cannot be read with codes of their own, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ComfygateError as error:
            fail(error)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            _fail_with("invalid_database_url", f"not a database URL: {_first_line(error)}")
        except pydantic.ValidationError as error:
            _fail_with("invalid_settings", _first_line(error).removesuffix(":"), str(error))
        except sa.exc.DBAPIError as error:
            _fail_with("database_error", f"the database said: {_first_line(error)}")
        except ImportError as error:  # a URL whose driver is not installed
            _fail_with("invalid_database_url", f"no driver for this URL: {_first_line(error)}")
        except (OSError, UnicodeDecodeError) as error:
            _fail_with("unreadable_input", _first_line(error))


def _fail_with(code: str, message: str, more: str = "") -> NoReturn:
    click.echo(f"error [{code}]: {message}", err=True)
    for line in more.splitlines()[1:]:
        click.echo(f"  {line}", err=True)
    sys.exit(1)


@click.group(cls=ErrorHandlingGroup)
@click.option(
    "--database",
    "database_url",
    envvar="COMFYGATE_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL (default sqlite:///./comfygate.db).",
)
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """comfygate: sell ComfyUI image work by the token."""
    app_ctx = AppContext(database_url)
    ctx.obj = app_ctx
    ctx.call_on_close(app_ctx.close)


def _register_all() -> None:
    from comfygate.entrypoints import (
        cli_costs,
        cli_db,
        cli_gateway,
        cli_ledger,
        cli_pricing,
        cli_reports,
        cli_workers,
    )

    cli_ledger.register(main)
    cli_pricing.register(main, lambda ctx: app(ctx).pricing, lambda ctx: app(ctx).audit)
    cli_gateway.register(main)
    cli_workers.register(main)
    cli_reports.register(main)
    cli_costs.register(main)
    cli_db.register(main)


_register_all()
