"""A fake ComfyUI that speaks the real protocol (HTTP + websocket) with scripted faults.

``FakeComfyUI`` runs a Starlette app under uvicorn in a thread on 127.0.0.1; its
``behaviour`` (``FakeBehaviour``) scripts the scenario: slow jobs, node failures,
rejected prompts in every error shape, cached replay, websocket drops, renamed
uploads, a server that dies mid-job.
"""

from tests.comfyui_fake.server import FakeBehaviour, FakeComfyUI

__all__ = ["FakeBehaviour", "FakeComfyUI"]
