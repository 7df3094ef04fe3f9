"""The ComfyUI node layer of MMAudio Sync.

Thin adapters between ComfyUI's world (V3 schemas, IMAGE/VIDEO/AUDIO, model folders, the memory manager,
progress and interrupts) and the model library in ``mmaudio/``. Every module here may import ComfyUI; none of
the library's modules may.
"""
