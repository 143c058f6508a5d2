"""Encoding frames to a video file with PyAV (sample corpora, previews)."""

from pathlib import Path

import av
import numpy as np


def write_mp4(path, frames: np.ndarray, fps: int = 24) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 in a local .mp4 (even sizes: yuv420p needs them)."""
    path = Path(path)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in yuv420p needs even frame sizes, got {width}x{height}")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
