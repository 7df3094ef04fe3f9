"""Small test videos written with PyAV: a white bar moving across a 64x48 black frame, so every frame differs
and CLIP/Synchformer see motion."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_moving_bar_video(path: Path, *, frames: int, fps: int = 12, codec: str = "mpeg4", step: int = 4,
                           bar: int = 8, faststart: bool = False) -> Path:
    """``frames`` frames at ``fps``, the bar ``bar`` pixels wide moving ``step`` pixels a frame; ``faststart``
    puts an mp4's index first, as files made for the web have it."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:, (i * step) % 64:(i * step) % 64 + bar] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
