"""Developer tools of the repository (not loaded by ComfyUI): run them from the repository root with ``-m``."""
