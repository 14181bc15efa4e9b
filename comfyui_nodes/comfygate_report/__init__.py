"""comfygate's ComfyUI custom nodes: per-prompt inference time and peak GPU memory.

Install by copying this folder into ComfyUI's ``custom_nodes/`` and restarting ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
