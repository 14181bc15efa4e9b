"""``comfygate workers status [--json]``: each ComfyUI instance, up or down, its queue,
VRAM, ready capabilities and last error.

Probes every configured instance once (``/system_stats``, each pack against
``/object_info``) without warm-up jobs, so it is safe to run next to a live gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import click

from comfygate.adapters.comfyui.factory import comfyui_engine_from_settings
from comfygate.config import Settings, load_settings
from comfygate.domain.errors import ValidationFailedError


async def workers_status(settings: Settings) -> list[dict[str, Any]]:
    """Probe the configured instances once; [] when none is configured."""
    engine = comfyui_engine_from_settings(settings)
    if engine is None:
        return []
    try:
        await engine.check()
        return engine.status()
    finally:
        await engine.close()


def _describe(row: dict[str, Any]) -> str:
    state = "up" if row["up"] else "DOWN"
    vram = ", ".join(
        f"{d['name']} {d['vram_free_mb']}/{d['vram_total_mb']} MB free" for d in row["devices"]
    )
    caps = ", ".join(row["capabilities"]) or "-"
    line = f"{row['url']}  {state}  running {row['running']}  queue {row['queue']}  [{caps}]"
    line += f"  {vram}" if vram else ""
    return line + (f"\n    last error: {row['last_error']}" if row["last_error"] else "")


def register(group: click.Group, settings: Callable[[], Settings] = load_settings) -> None:
    """Add the ``workers`` group (``workers status``) to ``group``."""

    @group.group("workers")
    def workers() -> None:
        """ComfyUI worker instances."""

    @workers.command("status")
    @click.option("--json", "as_json", is_flag=True, help="print JSON (one object per instance)")
    def status(as_json: bool) -> None:
        """Show each ComfyUI instance: up/down, queue, VRAM, last error."""
        try:
            rows = asyncio.run(workers_status(settings()))
        except ValidationFailedError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            for problem in exc.errors:
                click.echo(f"  - {problem}", err=True)
            raise SystemExit(1) from exc
        if as_json:
            click.echo(json.dumps(rows))
        elif not rows:
            click.echo("no ComfyUI instance configured (COMFYGATE_COMFYUI_URLS or comfyui_pools)")
        else:
            click.echo("\n".join(_describe(r) for r in rows))
