"""Builds the ComfyUI engine from settings (called by the composition root).

``COMFYGATE_COMFYUI_URLS`` gives every capability that has a workflow pack the same
instances; ``comfyui_pools`` in the config file gives a capability its own instances
(and wins over the URL list for that capability). No instance configured: no engine.
"""

from __future__ import annotations

from comfygate.adapters.comfyui.engine import ColdStartCallback, ComfyUIEngine
from comfygate.adapters.comfyui.packs import load_packs
from comfygate.adapters.comfyui.pool import InstanceConfig
from comfygate.config import Settings


def parse_header(raw: str | None) -> dict[str, str]:
    """``"Name: value"`` as a header dict; a bare value is taken as ``Authorization``."""
    if not raw or not raw.strip():
        return {}
    name, sep, value = raw.partition(":")
    if not sep or " " in name.strip():
        return {"Authorization": raw.strip()}
    return {name.strip(): value.strip()}


def comfyui_pools(settings: Settings, capabilities: set[str]) -> dict[str, list[InstanceConfig]]:
    """Instances per capability from ``comfyui_urls`` and ``comfyui_pools``."""
    shared = [
        InstanceConfig(url.rstrip("/"), parse_header(settings.comfyui_auth_header))
        for url in settings.comfyui_url_list()
    ]
    pools = {capability: list(shared) for capability in sorted(capabilities)} if shared else {}
    for capability, members in settings.comfyui_pools.items():
        pools[capability] = [
            InstanceConfig(m.url.rstrip("/"), parse_header(m.auth_header)) for m in members
        ]
    return {capability: members for capability, members in pools.items() if members}


def comfyui_engine_from_settings(
    settings: Settings, *, on_cold_start: ColdStartCallback | None = None
) -> ComfyUIEngine | None:
    """The ComfyUI engine, or None when no instance is configured.

    Raises ``ValidationFailedError`` for bad packs or a pool without a pack.
    """
    extra = [settings.comfyui_workflows_dir] if settings.comfyui_workflows_dir else []
    if not settings.comfyui_url_list() and not settings.comfyui_pools:
        return None
    packs = load_packs(extra)
    pools = comfyui_pools(settings, set(packs))
    if not pools:
        return None
    return ComfyUIEngine(
        packs=packs,
        pools=pools,
        timeout_s=settings.comfyui_timeout_s,
        max_attempts=settings.comfyui_max_attempts,
        warm_up=settings.comfyui_warm_up,
        probe_interval_s=settings.comfyui_probe_interval_s,
        on_cold_start=on_cold_start,
    )
