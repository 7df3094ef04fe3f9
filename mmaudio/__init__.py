"""MMAudio re-implemented in plain PyTorch.

This package is the model library of the node pack. It never imports ComfyUI and uses relative imports only,
so it can live inside a ComfyUI custom-node folder beside other packs that ship a top-level ``mmaudio``.
"""

__all__: list[str] = []
