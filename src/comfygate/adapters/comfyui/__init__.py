"""ComfyUI workers: client, workflow packs, instance pools and the engine built on them."""

from comfygate.adapters.comfyui.engine import ColdStart, ComfyUIEngine
from comfygate.adapters.comfyui.factory import comfyui_engine_from_settings
from comfygate.adapters.comfyui.pool import InstanceConfig

__all__ = ["ColdStart", "ComfyUIEngine", "InstanceConfig", "comfyui_engine_from_settings"]
