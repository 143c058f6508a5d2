"""Real encoded test videos whose frames say which frame they are.

`indexed_frames(n)` draws each frame's index as a 4x4 grid of bright/dark blocks (12 bits of index + a 4-bit
check) over a drifting texture, so a decoded frame can be identified exactly despite lossy compression:
`frame_index(decoded)` reads it back (or returns -1 when the pattern is unreadable). `write_video` encodes
frames with PyAV (libx264 with B-frames and a short GOP by default; also libvpx-vp9, libvpx, mpeg4 into
mp4/mkv/webm/mov), `write_frame_folder` writes numbered JPEG/PNG files.
"""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

GRID = 4  # 4x4 blocks: 12 index bits + 4 check bits
INDEX_BITS = 12
BRIGHT, DARK = 205, 50  # far from the 128 threshold, so compression never flips a bit


def _check(index: int) -> int:
    """4-bit check word: a misread bit changes it (catches decoding the wrong block layout)."""
    return (((index >> 8) + (index >> 4) + index) & 0xF) ^ 0b1010


def _bits(index: int) -> list[int]:
    word = (index << 4) | _check(index)
    return [(word >> (15 - i)) & 1 for i in range(GRID * GRID)]


def indexed_frames(num_frames: int, height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames; frame t carries t in its block pattern, tinted and textured per frame."""
    if num_frames > 1 << INDEX_BITS:
        raise ValueError(f"num_frames={num_frames} exceeds the {1 << INDEX_BITS} indices the pattern can hold")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    bh, bw = height // GRID, width // GRID
    for t in range(num_frames):
        level = np.full((height, width), float(DARK), np.float32)
        for i, bit in enumerate(_bits(t)):
            if bit:
                r, c = divmod(i, GRID)
                level[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = BRIGHT
        # texture that moves, so P/B frames carry real motion, plus a per-frame colour tint
        texture = 12 * np.sin((xx + 3 * t) / 7.0) * np.cos((yy - 2 * t) / 9.0)
        tint = np.array([(t * 37) % 21 - 10, (t * 53) % 21 - 10, (t * 71) % 21 - 10], np.float32)
        img = level[..., None] + texture[..., None] + tint + rng.normal(0, 2, (height, width, 3))
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def frame_index(frame: np.ndarray) -> int:
    """The index drawn into a (decoded) frame, or -1 when its check word does not match."""
    height, width = frame.shape[:2]
    bh, bw = height // GRID, width // GRID
    luma = frame.astype(np.float32).mean(axis=2)
    bits = []
    for i in range(GRID * GRID):
        r, c = divmod(i, GRID)
        core = luma[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        bits.append(int(core.mean() > (BRIGHT + DARK) / 2))
    word = int("".join(map(str, bits)), 2)
    index, check = word >> 4, word & 0xF
    return index if _check(index) == check else -1


def write_video(path, frames: np.ndarray, codec: str = "libx264", fps: int = 24, gop: int = 12,
                bframes: int = 2, faststart: bool = False, audio: bool = False) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames to a local file; the container follows the file's extension.

    `audio`: an AAC track first (stream 0, the video is stream 1), one second longer than the video
    (mp4, mov and mkv; webm takes no AAC).
    """
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", container_options=options) as container:
        sound = container.add_stream("aac", rate=16000) if audio else None
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = _codec_options(codec, gop, bframes)
        if codec == "mpeg4":  # its default 200 kb/s smears small test frames
            stream.codec_context.max_b_frames, stream.codec_context.bit_rate = bframes, 4_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        if sound is not None:
            _write_tone(container, sound, seconds=len(frames) / fps + 1.0)
    return path


def _write_tone(container, stream, seconds: float) -> None:
    rate, size = stream.rate, 1024
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(0, len(samples), size):
        frame = av.AudioFrame.from_ndarray(samples[None, i:i + size], format="fltp", layout="mono")
        frame.rate, frame.pts = rate, i
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _codec_options(codec: str, gop: int, bframes: int) -> dict:
    if codec == "libx264":  # fixed GOP (no scene-cut keyframes), so seeks land mid-GOP predictably
        return {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"}
    if codec.startswith("libvpx"):  # fast settings: the tests encode on 2 CPU cores
        return {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
    return {}


def write_video_without_frames(path, codec: str = "libx264") -> Path:
    """A valid container header with a video stream but no frames (what an aborted recording can leave)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return path


def write_frame_folder(folder, frames: np.ndarray, ext: str = "png", name: str = "frame_{}") -> Path:
    """One image per frame, named `name.format(index)` (unpadded by default: natural sort is needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        kwargs = {"quality": 95} if ext.lower() in ("jpg", "jpeg") else {}
        Image.fromarray(frame).save(folder / f"{name.format(t)}.{ext}", **kwargs)
    return folder


def truncate_file(path, fraction: float) -> Path:
    """Cut a file down to `fraction` of its bytes in place (a partial upload or an interrupted copy)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def write_variable_rate_video(path, frames: np.ndarray, pts_ms: np.ndarray) -> str:
    """h264 mp4 whose frame k is shown at pts_ms[k] milliseconds (B-frames, GOP 8)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.time_base = "yuv420p", Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=2"}
        for frame, pts in zip(frames, pts_ms):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = int(pts), Fraction(1, 1000)
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
    return str(path)
