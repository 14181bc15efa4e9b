"""comfygate: sell ComfyUI image work by the token."""

__version__ = "0.1.0"
