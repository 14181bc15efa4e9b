"""``python -m comfygate`` is the ``comfygate`` command."""

from comfygate.entrypoints.cli import main

main()
