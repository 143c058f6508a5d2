"""Frame-exact video reading over fsspec: `probe_video` once per video, then `VideoSource.frames(k0, k1)`.

A video is a container PyAV can demux (mp4, mov, mkv, webm, ...) or a folder of JPEG/PNG frames (natural
name order: frame_2 before frame_10), at any fsspec URL (local, file://, s3://, gs://, http...).

Frame k is the k-th frame in presentation order of the whole video, whatever [k0, k1) is read: the probe
demuxes every packet (no decoding) and keeps the sorted presentation timestamps and the keyframes; a read
seeks to a keyframe, decodes forward and checks each frame's timestamp (see video_decode).

Damaged input raises VideoError naming the url, the frame (when known) and the cause. Truncation is caught
at probe where it can be: an mp4 whose index (moov) is lost cannot be opened; a packet cut short is flagged
by the demuxer; a container that declares more frames (its index) or a longer video stream (its duration)
than can be read was cut; the last GOP is decoded as a check. Anything left, such as damage inside the
file, surfaces at read time as a VideoError at the frame where decoding broke. Frames before it are right.

Decoding runs ahead on a thread (`prefetch` frames, bounded). Credentials never reach a message: URLs lose
their user:password@ and ?query, storage option values are replaced by *** (see `safe_url`, `redact`).
"""

from __future__ import annotations

import io
import queue
import re
import threading
import weakref
import zlib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Iterator

import fsspec
import numpy as np
from PIL import Image

from model.errors import SamstreamError

from .storage_options import redact, safe_url, strip_url_secrets
from .video_decode import DecodeError, decode_frames, describe, index_container

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FOLDER_FPS = 30.0  # a frame folder carries no rate; probe_video(fps=...) overrides
_END = object()


class VideoError(SamstreamError):
    """A video that cannot be read: `url` (credentials removed), `frame` (None when not known), `cause`."""

    def __init__(self, url: str, cause: str, frame: int | None = None):
        self.url, self.cause, self.frame = safe_url(url), strip_url_secrets(cause, url), frame
        where = f" at frame {frame}" if frame is not None else ""
        super().__init__(f"video {self.url}{where}: {self.cause}")


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learnt: the exact frame count, rate, native size, and how to find frame k again.

    Per-frame data is stored zlib-compressed (an hour of video stays in the kilobytes); read it through
    `pts()`, `keyframes()` and `frame_files()`.
    """

    url: str
    num_frames: int
    fps: float
    width: int
    height: int
    kind: str = "video"  # "video": a container read by PyAV; "frames": a folder of images
    codec: str = ""
    stream_index: int = 0  # the video stream within the container
    time_base: Fraction | None = None  # of the pts
    seekable: bool = True  # False: seeks miss in this container (MPEG-TS/PS...); reads decode from the start
    packed_pts: bytes = field(default=b"", repr=False)  # sorted pts of all frames; b"" = no timestamps
    packed_keyframes: bytes = field(default=b"", repr=False)  # frame index of each keyframe
    packed_files: bytes = field(default=b"", repr=False)  # folder: image names in frame order

    def pts(self) -> np.ndarray:
        """int64 (num_frames,) presentation timestamps in frame order (empty: the stream has none)."""
        return _unpack(self.packed_pts).cumsum()

    def frame_times(self, start: int, stop: int) -> np.ndarray:
        """float64 (stop - start,) seconds of frames [start, stop): pts x time_base where the container has
        timestamps (variable frame rate video has no single fps), k / fps for frame folders and streams
        without timestamps."""
        if not 0 <= start <= stop <= self.num_frames:
            raise ValueError(f"frame range [{start}, {stop}) is outside [0, {self.num_frames}) of "
                             f"{safe_url(self.url)}")
        if not self.packed_pts or self.time_base is None:
            return np.arange(start, stop, dtype=np.float64) / self.fps
        tb = self.time_base
        return self.pts()[start:stop].astype(np.float64) * tb.numerator / tb.denominator

    def keyframes(self) -> np.ndarray:
        """int64 (K,) sorted frame indices of the keyframes."""
        return _unpack(self.packed_keyframes)

    def frame_files(self) -> list[str]:
        return zlib.decompress(self.packed_files).decode().split("\n") if self.packed_files else []


def probe_video(url: str, storage_options: dict | None = None, *, fps: float | None = None) -> VideoInfo:
    """Probe a video file or a frame folder. `fps` overrides the rate (a folder's default is FOLDER_FPS)."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    so = storage_options or {}
    try:
        fs, path = fsspec.core.url_to_fs(url, **so)
        if fs.isdir(path):
            return _probe_folder(fs, path, url, fps or FOLDER_FPS)
        info = _probe_container(fs, path, url)
    except (VideoError, DecodeError) as e:
        raise VideoError(url, redact(e.cause, so), e.frame) from e
    except Exception as e:  # I/O errors (permissions, network) and anything else PyAV or fsspec raise
        raise VideoError(url, redact(describe(e), so)) from e
    return info if fps is None else replace(info, fps=float(fps))


class VideoSource:
    """Reads frames [start, stop) of a probed video; decoding runs ahead on a thread (`prefetch` frames).

    `threads`: the video decoder's own threads (0: FFmpeg's choice, one per core + 1; 1: none). Pixels are the
    same either way; an actor stepping B streams can give each its share of the cores instead of B x all.
    """

    def __init__(self, info: VideoInfo, storage_options: dict | None = None, prefetch: int = 8, threads: int = 0):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: the decoder's choice), got {threads!r}")
        self.info, self.storage_options, self.prefetch = info, storage_options or {}, prefetch
        self.threads = int(threads)
        self._live: weakref.WeakSet[FrameIterator] = weakref.WeakSet()
        self._closed = False

    def frames(self, start: int, stop: int) -> FrameIterator:
        """uint8 (H, W, 3) RGB frames start..stop-1 at native size, exactly as in the whole video."""
        if self._closed:
            raise ValueError(f"VideoSource of {safe_url(self.info.url)} is closed")
        n = self.info.num_frames
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))):
            raise ValueError(f"frame range must be integers, got start={start!r}, stop={stop!r}")
        if not 0 <= start <= stop <= n:
            raise ValueError(f"frame range [{start}, {stop}) is outside [0, {n}) of {safe_url(self.info.url)}")
        it = FrameIterator(self._producer(int(start), int(stop)), self.info.url, int(start), self.prefetch)
        self._live.add(it)
        return it

    def close(self) -> None:
        """Stop every iterator still running."""
        self._closed = True
        for it in list(self._live):
            it.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _producer(self, start: int, stop: int):
        info, so, threads = self.info, self.storage_options, self.threads
        if info.kind == "frames":
            return lambda: _scrubbed(_read_images(info, so, start, stop), so)
        return lambda: _scrubbed(_read_video(info, so, start, stop, threads), so)


class FrameIterator:
    """Iterator over decoded frames, fed by a daemon thread through a bounded queue.

    `close()` (or the end of a `with` block, or garbage collection) stops the thread. The thread holds
    only the queue and the stop event, never this object, so an abandoned iterator is collected.
    """

    def __init__(self, produce, url: str, start: int, prefetch: int):
        self.url, self._next = url, start
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=_run_producer, args=(produce, self._queue, self._stop, url, start),
                                       name=f"VideoSource[{start}:]", daemon=True)
        self.thread.start()

    def __iter__(self) -> FrameIterator:
        return self

    def __next__(self) -> np.ndarray:
        if self._stop.is_set():
            raise StopIteration
        item = self._get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self._next += 1
        return item

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive() and self._queue.empty():  # died without a word: never hang
                    return VideoError(self.url, "the decoding thread stopped unexpectedly", self._next)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the decoding thread and wait for it (it finishes at most the frame it is decoding)."""
        self._stop.set()
        _drain(self._queue)
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def __enter__(self) -> FrameIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        stop = getattr(self, "_stop", None)  # absent when __init__ failed
        if stop is not None:
            stop.set()  # no join here: never block the garbage collector


def _scrubbed(frames: Iterator[np.ndarray], so: dict) -> Iterator[np.ndarray]:
    """`frames`, with secrets from the storage options removed from any VideoError they raise."""
    try:
        yield from frames
    except VideoError as e:
        raise VideoError(e.url, redact(e.cause, so), e.frame) from e.__cause__
    finally:
        frames.close()


def _run_producer(produce, q: queue.Queue, stop: threading.Event, url: str, start: int) -> None:
    """Thread body: put frames, then _END or the error (as a VideoError naming the frame)."""
    frames, k = produce(), start
    try:
        for frame in frames:
            if not _put(q, frame, stop):
                return
            k += 1
        _put(q, _END, stop)
    except VideoError as e:
        _put(q, e, stop)
    except Exception as e:  # a bug or an unexpected library error still names the frame
        error = VideoError(url, describe(e), k)
        error.__cause__ = e
        _put(q, error, stop)
    finally:
        frames.close()  # releases the container and the file now, in this thread


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


# ---- containers (the PyAV side lives in video_decode) ------------------------------------------------------
def _probe_container(fs, path: str, url: str) -> VideoInfo:
    index = index_container(lambda: fs.open(path, "rb"))
    packed_pts = b"" if index.pts is None else _pack(np.diff(index.pts, prepend=0))
    return VideoInfo(url, index.num_frames, index.fps, index.width, index.height, "video", index.codec,
                     index.stream_index, index.time_base, index.seekable, packed_pts, _pack(index.keyframes))


def _read_video(info: VideoInfo, so: dict, start: int, stop: int, threads: int = 0) -> Iterator[np.ndarray]:
    fs, path = fsspec.core.url_to_fs(info.url, **so)
    pts = info.pts() if info.packed_pts else None
    frames = decode_frames(lambda: fs.open(path, "rb"), info.stream_index, pts, info.keyframes(), info.seekable,
                           start, stop, threads)
    try:
        for k, frame in enumerate(frames, start):
            if (frame.height, frame.width) != (info.height, info.width):
                raise VideoError(info.url, f"frame size changed to {frame.width}x{frame.height} from "
                                           f"{info.width}x{info.height}", k)
            yield frame.to_ndarray(format="rgb24")
    except DecodeError as e:
        raise VideoError(info.url, e.cause, e.frame) from e
    finally:
        frames.close()  # the container and the file, now and in this thread


# ---- frame folders --------------------------------------------------------------------------------------
def _probe_folder(fs, path: str, url: str, fps: float) -> VideoInfo:
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    names = sorted((n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")),
                   key=_natural_key)
    if not names:
        raise VideoError(url, f"the folder holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} frames")
    try:
        with fs.open(f"{path.rstrip('/')}/{names[0]}", "rb") as f:
            width, height = Image.open(f).size  # reads the header only
    except Exception as e:
        raise VideoError(url, f"image {names[0]} is unreadable ({describe(e)})", 0) from e
    return VideoInfo(url, len(names), float(fps), width, height, "frames",
                     packed_files=zlib.compress("\n".join(names).encode()))


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_images(info: VideoInfo, so: dict, start: int, stop: int) -> Iterator[np.ndarray]:
    fs, path = fsspec.core.url_to_fs(info.url, **so)
    names = info.frame_files()
    for k in range(start, stop):
        try:
            with Image.open(io.BytesIO(fs.cat_file(f"{path.rstrip('/')}/{names[k]}"))) as img:
                frame = np.array(img.convert("RGB"))
        except Exception as e:
            raise VideoError(info.url, f"image {names[k]} is unreadable ({describe(e)})", k) from e
        if frame.shape[:2] != (info.height, info.width):
            raise VideoError(info.url, f"image {names[k]} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                                       f"is {info.width}x{info.height}", k)
        yield frame


# ---- small helpers --------------------------------------------------------------------------------------
def _pack(values) -> bytes:
    return zlib.compress(np.ascontiguousarray(values, dtype="<i8").tobytes())


def _unpack(data: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype="<i8") if data else np.zeros(0, np.int64)


