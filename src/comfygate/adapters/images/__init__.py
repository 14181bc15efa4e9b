"""Upload handling: stream to disk with digests, then inspect the header.

The public face of the images adapter; the per-format structure walkers are private.
"""

from __future__ import annotations

from comfygate.adapters.images.inspect import inspect_image
from comfygate.adapters.images.upload import receive_upload, receive_upload_sync

__all__ = ["inspect_image", "receive_upload", "receive_upload_sync"]
