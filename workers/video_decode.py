"""The PyAV side of VideoSource: index a container's video stream, then decode frames [k0, k1) exactly.

Frame k is the k-th frame in presentation order. `index_container` demuxes every packet of the video stream
(no decoding) and keeps the sorted presentation timestamps (pts) and the keyframes; it never trusts the
container's frame count, only uses what the container declares to notice a file cut short. `decode_frames`
seeks to the last keyframe at or before k0 (by its pts: FFmpeg's mov and matroska demuxers land exactly on it
that way), decodes forward, drops the pre-roll and checks every frame's pts against the index. A seek that
lands after k0 (a demuxer that indexes by dts, an imprecise MPEG-TS/PS search) backs off to earlier
keyframes, then decodes from the start. Containers whose seeks miss at probe time are marked unseekable and
always decoded from the start; streams without timestamps are counted by decoding and read the same way.

Errors are DecodeError(cause, frame); workers.video_source turns them into VideoError with the url.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import av
import numpy as np

from model.errors import SamstreamError

TAIL_CHECK_MAX_FRAMES = 1200  # a longer last GOP (rare) is not decoded at probe, only the first frame
SEEK_BACKOFF = 3  # keyframes tried when a seek lands after the wanted frame, before decoding from the start
DEFAULT_FPS = 30.0  # when a stream declares no rate and has a single frame


class DecodeError(SamstreamError):
    def __init__(self, cause: str, frame: int | None = None):
        self.cause, self.frame = cause, frame
        super().__init__(cause if frame is None else f"at frame {frame}: {cause}")


@dataclass(frozen=True)
class ContainerIndex:
    num_frames: int
    fps: float
    width: int  # of decoded frames
    height: int
    codec: str
    stream_index: int
    time_base: Fraction | None
    pts: np.ndarray | None  # int64, sorted: frame k has pts[k]; None: the packets carry no timestamps
    keyframes: np.ndarray  # int64 frame indices of the keyframes
    seekable: bool  # a seek to a keyframe's pts lands on or before it


class Input:
    """The video stream of a file opened by PyAV; `fresh` while nothing has been read from it. `threads`: the
    decoder's threads (0: FFmpeg's choice, one per core + 1; 1: none, the reading thread decodes)."""

    def __init__(self, open_file: Callable, stream_index: int | None = None, threads: int = 0):
        self._open_file, self._stream_index, self._threads = open_file, stream_index, threads
        self._open()

    def _open(self) -> None:
        try:
            self.file = self._open_file()
        except FileNotFoundError as e:
            raise DecodeError("not found") from e
        try:
            self.container = av.open(self.file, "r")
        except Exception as e:
            self.file.close()
            why = "it ends before any video data" if isinstance(e, av.error.EOFError) else "not a readable video"
            raise DecodeError(f"{why} ({describe(e)})") from e
        try:
            self.stream = self._video_stream()
        except BaseException:
            self.close()
            raise
        self.fresh = True

    def _video_stream(self):
        streams = self.container.streams
        if self._stream_index is None:  # the first real video stream: cover art is a one-picture "video"
            videos = [s for s in streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            if not videos:
                raise DecodeError("the file has no video stream")
        stream = videos[0] if self._stream_index is None else streams[self._stream_index]
        if stream.type != "video":
            raise DecodeError(f"stream {self._stream_index} is {stream.type}, not video")
        stream.thread_type = "AUTO"  # frame + slice threads: several times faster, same pixels
        stream.codec_context.thread_count = self._threads
        return stream

    def rewind(self) -> None:
        """Back to the first packet: reopen (seeking to the start is not reliable in every format)."""
        if not self.fresh:
            self.close()
            self._open()

    def seek(self, pts: int) -> None:
        self.fresh = False
        self.container.seek(int(pts), backward=True, stream=self.stream)

    def packets(self):
        self.fresh = False
        return self.container.demux(self.stream)

    def frames(self, frame_index: Callable[[], int]) -> Iterator[av.VideoFrame]:
        """Decoded frames; a decoder or I/O error becomes a DecodeError at `frame_index()`."""
        self.fresh = False
        frames = self.container.decode(self.stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except Exception as e:
                raise DecodeError(f"decoding failed ({describe(e)})", frame_index()) from e
            yield frame

    def close(self) -> None:
        self.container.close()
        self.file.close()

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- probing ----------------------------------------------------------------------------------------------
def index_container(open_file: Callable) -> ContainerIndex:
    """Exact frame count and seek index of the first video stream of the file `open_file()` returns."""
    with Input(open_file) as inp:
        packets, total = _demux_index(inp)
        if total == 0:
            raise DecodeError("the video stream has no frames")
        if any(p[0] is None for p in packets):
            return _index_by_decoding(inp)
        pts = np.sort(np.asarray([p[0] for p in packets], np.int64))
        _check_declared_length(inp.stream, packets, pts, total)
        keyframes = _keyframe_table(packets, pts)
        seekable, frame = _check_tail(inp, pts, keyframes)
        # built inside the `with`: PyAV's stream attributes read garbage once the container is closed
        stream = inp.stream
        return ContainerIndex(len(pts), _frame_rate(stream, pts), frame.width, frame.height,
                              stream.codec_context.name, stream.index, stream.time_base, pts, keyframes, seekable)


def _demux_index(inp: Input) -> tuple[list[tuple], int]:
    """(pts, is keyframe, duration) of every packet that makes a frame, and the packet count with discards.

    Reads the whole stream but decodes nothing. Packets the demuxer marks discard (edit lists cutting a
    GOP's head) are decoded by a reader but never shown, so they are not frames.
    """
    packets, total = [], 0
    try:
        for packet in inp.packets():
            if not packet.size:  # the demuxer's final empty packet
                continue
            if packet.is_corrupt:
                raise DecodeError("truncated or damaged: a packet is cut short or corrupt", total)
            total += 1
            if not packet.is_discard:
                packets.append((packet.pts, packet.is_keyframe, packet.duration))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"truncated or damaged: demuxing failed ({describe(e)})", total) from e
    return packets, total


def _check_declared_length(stream, packets: list[tuple], pts: np.ndarray, total: int) -> None:
    """A container that promises more than can be read was cut short (a partial upload or copy).

    The declared duration is compared with where the last frame ends, counted from zero or from the first
    frame (muxers differ: the larger wins), with the last frame's own duration (a long last frame of a
    variable-rate video is not a missing one).
    """
    n = len(pts)
    if stream.frames and stream.frames > total:  # mp4/mov: the sample table
        raise DecodeError(f"truncated or damaged: the container's index lists {stream.frames} frames but only "
                          f"{total} can be read", n)
    declared = _declared_seconds(stream)
    if declared is None or n < 2 or total != n:  # discarded packets (edit lists): durations are ambiguous
        return
    tb, step = stream.time_base, int(np.median(np.diff(pts)))
    last = max(packets, key=lambda p: p[0])[2] or step
    readable = float((int(pts[-1]) + last - min(int(pts[0]), 0)) * tb)
    if declared - readable > 0.75 * step * tb + 0.002 * declared:  # ms rounding of durations passes
        raise DecodeError(f"truncated or damaged: the video stream should last {declared:.3f} s but only {n} "
                          f"frames ({readable:.3f} s) can be read", n)


def _declared_seconds(stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska's per-track tag
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag or "")
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def _keyframe_table(packets: list[tuple], pts: np.ndarray) -> np.ndarray:
    index = {int(p): k for k, p in enumerate(pts)}
    return np.asarray(sorted(index[p[0]] for p in packets if p[1]), np.int64)


def _check_tail(inp: Input, pts: np.ndarray, keyframes: np.ndarray) -> tuple[bool, av.VideoFrame]:
    """Seek to the last keyframe and decode to the end: proves the count and that seeks land.

    Returns (seekable, a decoded frame). When the seek misses, only the first frame is proven.
    """
    n, last = len(pts), int(keyframes[-1]) if len(keyframes) else 0
    if 0 < last and n - last <= TAIL_CHECK_MAX_FRAMES:
        inp.seek(pts[last])
        frames, landed = _collect(_decode_expected(inp, pts[last:].tolist(), last, n, after_seek=True))
        if landed:
            return True, frames[-1]
    inp.rewind()
    frames, _ = _collect(_decode_expected(inp, pts[:1].tolist(), 0, n, after_seek=False))
    return last == 0 or n - last > TAIL_CHECK_MAX_FRAMES, frames[0]


def _index_by_decoding(inp: Input) -> ContainerIndex:
    """Packets without timestamps (raw streams): count decoded frames; reads will go from the start."""
    inp.rewind()
    count, first = 0, None
    for frame in inp.frames(lambda: count):
        first = frame if first is None else first
        count += 1
    if first is None:
        raise DecodeError("the video stream has no decodable frames")
    stream = inp.stream
    rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
    return ContainerIndex(count, rate, first.width, first.height, stream.codec_context.name, stream.index,
                          stream.time_base, None, np.zeros(0, np.int64), False)


def _frame_rate(stream, pts: np.ndarray) -> float:
    if stream.average_rate:
        return float(stream.average_rate)
    if len(pts) > 1 and stream.time_base:  # measured: frames per second of presentation time
        return float((len(pts) - 1) / ((int(pts[-1]) - int(pts[0])) * stream.time_base))
    return float(stream.guessed_rate or DEFAULT_FPS)


# ---- reading ----------------------------------------------------------------------------------------------
def decode_frames(open_file: Callable, stream_index: int, pts: np.ndarray | None, keyframes: np.ndarray,
                  seekable: bool, start: int, stop: int, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Frames [start, stop) in presentation order, each verified by its pts (when the stream has them).
    `threads`: the decoder's (Input)."""
    if start >= stop:
        return
    with Input(open_file, stream_index, threads) as inp:
        if pts is None:
            yield from _decode_sequential(inp, start, stop)
        elif not seekable:
            yield from _skip(_decode_expected(inp, pts[:stop].tolist(), 0, len(pts), after_seek=False), start)
        else:
            yield from _decode_range(inp, pts, keyframes, start, stop)


def _decode_range(inp: Input, pts: np.ndarray, keyframes: np.ndarray, start: int, stop: int):
    expected = pts[start:stop].tolist()
    pos = bisect_right(keyframes.tolist(), start) - 1
    # the keyframe at or before `start`, up to SEEK_BACKOFF earlier ones (never the first: that is the
    # start of the stream, reached by reopening), then the start
    for candidate in [*range(pos, max(pos - SEEK_BACKOFF, 0), -1), None]:
        if candidate is None:
            inp.rewind()
        else:
            inp.seek(pts[keyframes[candidate]])
        if (yield from _decode_expected(inp, expected, start, len(pts), after_seek=candidate is not None)):
            return


def _decode_expected(inp: Input, expected: list[int], start: int, num_frames: int, after_seek: bool):
    """Yield the frames whose pts are `expected` (frames start, start+1, ...), skipping the pre-roll.

    Returns True when done; False (nothing yielded) when a seek landed after `start`.
    """
    k = start
    for frame in inp.frames(lambda: k):
        want = expected[k - start]
        if frame.pts is None:
            raise DecodeError("decoded a frame without a timestamp", k)
        if k == start and frame.pts < want:
            continue  # pre-roll: from the keyframe up to the wanted frame
        if frame.pts != want:
            if k == start and after_seek:
                return False
            raise DecodeError(f"decoded pts {frame.pts} where frame {k} has pts {want}: frames missing or out "
                              f"of order (damaged file)", k)
        yield frame
        k += 1
        if k - start == len(expected):
            return True
    if k == start and after_seek:  # some demuxers seek past the end instead of before the keyframe
        return False
    raise DecodeError(f"the video stream ended after {k} of {num_frames} frames (truncated or damaged)", k)


def _decode_sequential(inp: Input, start: int, stop: int):
    k = 0
    for frame in inp.frames(lambda: k):
        if k >= start:
            yield frame
        k += 1
        if k == stop:
            return
    raise DecodeError(f"the video stream ended after {k} frames, {stop} expected (truncated or damaged)", k)


def _skip(frames: Iterator, n: int):
    for i, frame in enumerate(frames):
        if i >= n:
            yield frame


def _collect(frames: Iterator) -> tuple[list, object]:
    """All items of a generator and its return value."""
    items = []
    while True:
        try:
            items.append(next(frames))
        except StopIteration as done:
            return items, done.value


def describe(e: BaseException) -> str:
    """An exception as `Type: message`; PyAV's errors without their errno and '<none>' file name."""
    if isinstance(e, av.error.FFmpegError):
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {e}"
