"""StreamWorker: one model on one device, the states of the streams pinned to it, and nothing else.

Thin by design: decode -> step (batched across the streams of one call) -> encode -> write -> snapshot.
Masks reach the host one frame late: frame t's change bits (workers.mask_runs: computed where the masks are,
8x fewer bytes than the masks) are copied (non-blocking, on CUDA) and RLE-encoded while the device computes
frame t + 1, so the frame loop never waits on a device-to-host copy.
The Ray actor is this class wrapped by cluster/ (`ray.remote(StreamWorker)`), so it also runs without Ray.
"""

import os
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from model import StateError, StreamingTracker, TrackerState, load_model

from .host_allocator import tune_host_allocator
from .mask_runs import change_bits, encode_change_bits
from .masklets import ChunkRows
from .output import RunOutput
from .tasks import ChunkReport, ChunkTask, ModelSpec
from .tracks import GLOBAL, LOCAL, part_tracks, with_tracks
from .video_source import VideoError, VideoSource


@dataclass
class _Running:
    """One chunk in flight inside a call."""

    task: ChunkTask
    state: TrackerState
    frames: object  # iterator of decoded frames
    rows: ChunkRows
    report: ChunkReport
    prompts: dict[int, list]
    times: np.ndarray | None = None  # seconds of frames [start, stop), from the video's timestamps
    overlap_rows: ChunkRows | None = None  # pseudo-label: rows on the segment's overlaps, for stitching


@dataclass
class _Pending:
    """One stream's frame whose masks are on their way to the host."""

    running: _Running
    frame: int
    object_ids: list[int]
    bits: torch.Tensor  # (O, H, ceil(W / 8)) uint8 change bits of the masks, host (pinned on CUDA, filled by a
    #                     non-blocking copy)
    size: tuple[int, int]  # (H, W) of the masks
    ious: torch.Tensor  # (O,)
    object_scores: torch.Tensor  # (O,)
    is_prompt: list[bool]
    copied: torch.cuda.Event | None  # recorded after the copies; None on CPU (nothing to wait for)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """Start copying a device tensor to the host without waiting; CPU tensors are returned as they are."""
    if t.device.type != "cuda":
        return t
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


def _fail(report: ChunkReport, error: Exception) -> None:
    """Record why a chunk failed, in one line; storage errors (OSError, a snapshot that cannot be read) are
    worth retrying, bad input (an undecodable video, a prompt that does not fit) is not."""
    report.ok = False
    report.error = " ".join(f"{type(error).__name__}: {error}".split())
    report.retryable = isinstance(error, (OSError, StateError)) and not isinstance(error, VideoError)


AUTOCAST = {"auto": "auto", "fp32": None, "bf16": torch.bfloat16}  # ModelSpec.dtype -> StreamingTracker's


class StreamWorker:
    def __init__(self, spec: ModelSpec, out_url: str, storage_options: dict | None = None,
                 device: str | None = None, num_threads: int | None = None, seed: int = 0):
        if num_threads:  # Ray sets OMP_NUM_THREADS=1; use the CPU share this actor was given
            torch.set_num_threads(num_threads)
        tune_host_allocator()  # reuse freed activation memory instead of faulting in fresh pages every frame
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)  # random weights (no checkpoint) are the same in every actor
        model = load_model(spec.preset, spec.checkpoint, spec.image_size, device, storage_options)
        self.tracker = StreamingTracker(model, spec.policy, spec.fill_hole_area, AUTOCAST[spec.dtype],
                                        spec.memory_kv_cache, spec.discovery)
        if spec.compile:
            self.tracker.compile()
        self.output = RunOutput(out_url, storage_options)
        self.storage_options = storage_options or {}
        self.states: dict[int, TrackerState] = {}  # fast path: the state after each stream's last chunk
        self.pending: list[_Pending] = []  # the last step's results, not yet encoded

    def pid(self) -> int:
        return os.getpid()

    def forget(self, stream: int) -> None:
        """Drop a finished stream's state."""
        self.states.pop(stream, None)

    def run(self, tasks: list[ChunkTask]) -> list[ChunkReport]:
        """Run one chunk of each of several streams, stepping their frames together."""
        running = [self._start(t) for t in tasks]
        for offset in range(max(t.stop - t.start for t in tasks)):
            active = [r for r in running if r.report.ok and r.task.start + offset < r.task.stop]
            if active:
                self._step(active, offset)
        self._encode_pending()
        for r in running:
            if r.report.ok:
                try:
                    self._finish(r)
                except Exception as e:  # storage: the driver retries the chunk from the last snapshot
                    _fail(r.report, e)
            if not r.report.ok:  # a half-advanced state must not be reused
                self.states.pop(r.task.stream, None)
        return [r.report for r in running]

    # ---- a chunk's life ----------------------------------------------------------------------------
    def _start(self, task: ChunkTask) -> _Running:
        report = ChunkReport(task.stream, task.chunk, True)
        prompts: dict[int, list] = {}
        for frame, prompt in task.prompts:
            prompts.setdefault(frame, []).append(prompt)
        try:
            state = self._state_for(task)
            frames = iter(VideoSource(task.info, self.storage_options).frames(task.start, task.stop))
        except Exception as e:  # a video or snapshot that cannot be read fails this chunk, not the actor
            _fail(report, e)
            # Read but not resumable (corrupt, another version, model or policy): no retry will change that.
            report.bad_snapshot = isinstance(e, StateError) and task.chunk > 0
            return _Running(task, None, None, None, report, prompts)
        times = task.info.frame_times(task.start, task.stop)  # the range is valid: frames() checked it
        overlap = ChunkRows(task.video_id) if task.overlaps else None
        return _Running(task, state, frames, ChunkRows(task.video_id), report, prompts, times, overlap)

    def _state_for(self, task: ChunkTask) -> TrackerState:
        state = self.states.get(task.stream)
        if state is not None and state.frame_index == task.start:
            return state
        if task.chunk == 0:
            return self.tracker.new_stream(task.info.height, task.info.width, task.start, task.discover_from)
        data = self.output.read_snapshot(task.stream, task.chunk - 1)  # another actor's work
        state = TrackerState.from_bytes(data, self.tracker.device)
        if state.frame_index != task.start:
            raise StateError(f"snapshot of stream {task.stream} ends at frame {state.frame_index}, "
                               f"chunk {task.chunk} starts at {task.start}")
        self.tracker.check_state(state)
        return state

    def _step(self, active: list[_Running], offset: int) -> None:
        t0 = time.perf_counter()
        frames = []
        for r in list(active):
            try:
                frames.append(next(r.frames))
            except Exception as e:
                _fail(r.report, e)
                active.remove(r)
        t1 = time.perf_counter()
        prompts = [r.prompts.get(r.task.start + offset, ()) for r in active]
        try:
            results = self.tracker.step_batch([r.state for r in active], frames, prompts)
        except Exception:  # isolate the stream at fault: step them one by one
            results = [self._step_one(r, f, p) for r, f, p in zip(active, frames, prompts)]
        t2 = time.perf_counter()
        ready = [self._start_copy(r, r.task.start + offset, res) for r, res in zip(active, results) if res is not None]
        self._encode_pending()  # the previous frame's, while the device works on this one
        self.pending = ready
        for r in active:
            s = r.report.seconds
            s["decode"] = s.get("decode", 0.0) + (t1 - t0) / len(active)
            s["model"] = s.get("model", 0.0) + (t2 - t1) / len(active)

    @staticmethod
    def _start_copy(r: _Running, frame: int, res) -> _Pending:
        """Queue frame `frame`'s results for the host: fixed-shape device ops and non-blocking copies only."""
        bits = _to_host(change_bits(res.masks))
        ious, scores = _to_host(res.ious.float()), _to_host(res.object_scores.float())
        copied = None
        if res.masks.device.type == "cuda":
            copied = torch.cuda.Event()
            copied.record()
        size = (res.masks.shape[1], res.masks.shape[2])
        return _Pending(r, frame, res.object_ids, bits, size, ious, scores, res.is_prompt, copied)

    def _encode_pending(self) -> None:
        """RLE-encode the pending frames into their chunks' rows (waiting for their copies if need be). On CUDA
        the wait for the device lands here, so "encode" seconds then hold the device time not overlapped."""
        for p in self.pending:
            t0 = time.perf_counter()
            if p.copied is not None:
                p.copied.synchronize()
            r, task = p.running, p.running.task
            own = task.rows is None or task.rows[0] <= p.frame < task.rows[1]
            overlap = any(a <= p.frame < b for a, b in task.overlaps)
            if own or overlap:  # encoded once for both tables
                row = (p.frame, float(r.times[p.frame - task.start]), p.object_ids,
                       encode_change_bits(p.bits.numpy(), *p.size), p.ious.numpy(), p.object_scores.numpy(),
                       p.is_prompt)
                if own:
                    r.rows.add(*row)
                if overlap:
                    r.overlap_rows.add(*row)
            r.report.frames += 1
            r.report.seconds["encode"] = r.report.seconds.get("encode", 0.0) + time.perf_counter() - t0
        self.pending = []

    def _step_one(self, r: _Running, frame: np.ndarray, prompts):
        try:
            return self.tracker.step(r.state, frame, prompts)
        except Exception as e:
            _fail(r.report, e)
            return None

    def _finish(self, r: _Running) -> None:
        t0 = time.perf_counter()
        task, table = r.task, r.rows.to_table()
        if r.overlap_rows is not None:  # before the part: a part on record means its overlap rows are too
            self.output.write_overlap(task.stream, task.chunk, r.overlap_rows.to_table())
        if task.discover_from is not None:
            table = with_tracks(table, part_tracks(table, task.segment, LOCAL if task.local_ids else GLOBAL))
        self.output.write_part(r.task.video_id, r.task.stream, r.task.chunk, table)
        t1 = time.perf_counter()
        self.output.write_snapshot(r.task.stream, r.task.chunk, r.state.to_bytes())
        self.output.prune_snapshots(r.task.stream, keep=r.task.chunk)  # the new one is durable: drop the rest
        self.states[r.task.stream] = r.state
        r.report.rows, r.report.objects = table.num_rows, len(r.state.object_ids)
        r.report.seconds["write"] = t1 - t0
        r.report.seconds["snapshot"] = time.perf_counter() - t1
        r.report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
