"""The driver loop: a pool of StreamWorker actors, streams pinned to actors, chunks in order, retries.

Each stream lives on one actor once started (its memory stays in that actor between chunks); an actor runs up
to `streams_per_actor` streams at once, one chunk of each per call, batched through the model. Streams not yet
started wait in one queue, longest first, and go to whichever actor has a free stream slot (an idle actor
first, then the one running fewest streams): an actor that finishes early takes more work, so no actor sits
idle while another holds a queue. A stream longer than a fair share of what is left runs alone on its actor.
(`assignment="static"`, every stream dealt to an actor up front by its frame count, is kept as the baseline
benchmarks/schedule_makespan.py measures against.) A chunk that
fails for a storage reason, or whose actor died, is run again (after a backoff) from the newest snapshot
before it, or from the stream's start; after `max_retries` failed attempts its video is recorded failed.
A dead actor is replaced. Chunks are idempotent (deterministic part names, atomic writes), so a chunk that
ran twice leaves one copy. The driver never raises on an actor's error.
"""

import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError

from workers.output import RunOutput
from workers.stream_worker import StreamWorker
from workers.tasks import ChunkReport

from .config import RunConfig
from .plan import StreamPlan


@dataclass
class StreamProgress:
    plan: StreamPlan
    next_chunk: int  # the next chunk to compute
    stop: int = -1  # compute chunks up to here (exclusive); -1: the stream's end
    error: str | None = None
    computed: int = 0  # chunks computed in this run
    frames: int = 0  # frames computed in this run
    skipped: int = 0  # chunks found complete from an earlier run
    attempts: int = 0  # failed attempts of the current chunk
    retry_at: float = 0.0  # time.monotonic() before which the current chunk is not tried again
    seconds: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # largest peak RSS reported by an actor running this stream
    notes: list = field(default_factory=list)  # what the user should know (a snapshot that was not resumed)

    def __post_init__(self):
        if self.stop < 0:
            self.stop = len(self.plan.chunks)

    @property
    def done(self) -> bool:
        return self.error is not None or self.next_chunk >= self.stop


def restart_chunk(plan: StreamPlan, output: RunOutput, chunk: int) -> int:
    """Where to compute `chunk` from: just after the newest snapshot before it, or the stream's start."""
    kept = [c for c in output.list_snapshots(plan.stream) if c < chunk]
    return kept[-1] + 1 if kept else 0


def remaining_frames(s: StreamProgress) -> int:
    """Frames the stream still has to compute in this run: its share of the work."""
    return s.plan.chunks[s.stop - 1][1] - s.plan.chunks[s.next_chunk][0] if s.next_chunk < s.stop else 0


def missing_chunks(plan: StreamPlan, output: RunOutput) -> list[int]:
    """Chunks whose part is absent, unreadable or has another number of rows than the plan expects (any
    number when objects are discovered)."""
    vid = plan.entry.video_id
    missing = []
    for c in range(len(plan.chunks)):
        rows, expected = output.part_rows(vid, plan.stream, c), plan.expected_rows(c)
        if rows is None or (expected is not None and rows != expected):
            missing.append(c)
    return missing


@dataclass
class _Slot:
    """One actor position in the pool."""

    index: int
    actor: object = None
    queue: list = field(default_factory=list)  # streams dealt to this actor up front (static assignment only)
    active: list = field(default_factory=list)  # streams admitted to it
    call: object = None  # the in-flight ObjectRef
    running: list = field(default_factory=list)  # the streams of that call


ASSIGNMENTS = ("dynamic", "static")


class Scheduler:
    def __init__(self, config: RunConfig, num_actors: int, resources: dict, streams_per_actor: int, progress=None,
                 worker: type = StreamWorker, assignment: str = "dynamic"):
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
        self.config, self.resources, self.streams_per_actor = config, resources, streams_per_actor
        self.output = RunOutput(config.out, config.storage_options)
        self.slots = [_Slot(i) for i in range(num_actors)]
        self.progress = progress
        self.worker, self.assignment = worker, assignment  # the actor class: StreamWorker, or a stand-in
        self.unstarted: deque[StreamProgress] = deque()  # dynamic assignment: streams no actor has yet
        self.actors_started = 0  # replacements included
        self.run_id = uuid.uuid4().hex[:8]  # actor names unique per run: names are released lazily

    def run(self, streams: list[StreamProgress]) -> None:
        streams = sorted(streams, key=lambda s: -remaining_frames(s))  # longest first: the tail is short
        if self.assignment == "static":
            for s in streams:  # onto the actor with the fewest frames dealt so far
                slot = min(self.slots, key=lambda sl: (sum(remaining_frames(x) for x in sl.queue), sl.index))
                slot.queue.append(s)
        else:
            self.unstarted.extend(streams)
        try:
            self._loop()
        finally:  # also on Ctrl-C: no actor outlives the run
            for slot in self.slots:
                self._kill(slot)

    def _loop(self) -> None:
        while True:
            self._admit()
            for slot in self.slots:
                if slot.call is None:
                    self._submit(slot)
            calls = [slot.call for slot in self.slots if slot.call is not None]
            waiting = [s for slot in self.slots for s in slot.active + slot.queue if not s.done]
            waiting += [s for s in self.unstarted if not s.done]
            if not calls and not waiting:
                return
            now = time.monotonic()
            backoff = [s.retry_at - now for s in waiting if s.retry_at > now]
            if not calls:
                time.sleep(min(backoff, default=0.0))
                continue
            ready, _ = ray.wait(calls, num_returns=1, timeout=min(backoff) if backoff else None)
            for ref in ready:
                self._collect(next(sl for sl in self.slots if sl.call == ref))

    def _admit(self) -> None:
        """Hand unstarted streams to actors with a free stream slot: idle actors first, then the actor running
        the fewest streams (it joins that actor's next call). An actor running a stream of at least a fair
        share of the remaining frames (all of them over the actors) takes no more: that stream is the run's
        critical path, and streams batched beside it would slow each of its chunks."""
        for slot in self.slots:
            slot.active = [s for s in slot.active if not s.done]
        if not self.unstarted:
            return
        remaining = [remaining_frames(s) for sl in self.slots for s in sl.active]
        share = (sum(remaining) + sum(remaining_frames(s) for s in self.unstarted)) / len(self.slots)
        open_ = [sl for sl in self.slots if not any(remaining_frames(s) >= share for s in sl.active)]
        while self.unstarted:
            free = [sl for sl in open_ if len(sl.active) < self.streams_per_actor]
            if not free:
                return
            slot = min(free, key=lambda sl: (sl.call is not None, len(sl.active), sl.index))
            stream = self.unstarted.popleft()
            slot.active.append(stream)
            if remaining_frames(stream) >= share:
                open_.remove(slot)

    def _submit(self, slot: _Slot) -> None:
        slot.active = [s for s in slot.active if not s.done]
        while slot.queue and len(slot.active) < self.streams_per_actor:
            slot.active.append(slot.queue.pop(0))
        now = time.monotonic()
        slot.running = [s for s in slot.active if s.retry_at <= now]
        if not slot.running:
            slot.call = None
            return
        if slot.actor is None:
            slot.actor = self._new_actor(slot)
        slot.call = slot.actor.run.remote([s.plan.task(s.next_chunk) for s in slot.running])

    def _new_actor(self, slot: _Slot):
        cls = ray.remote(self.worker).options(
            name=f"samstream-{self.run_id}-worker-{slot.index}-{self.actors_started}", max_restarts=0,
            **self.resources)
        self.actors_started += 1
        c = self.config
        return cls.remote(c.model, c.out, c.storage_options, num_threads=c.threads_per_actor)

    def _kill(self, slot: _Slot) -> None:
        if slot.actor is not None:
            try:
                ray.kill(slot.actor)
            except Exception:  # already gone
                pass
            slot.actor = None

    def _collect(self, slot: _Slot) -> None:
        call, slot.call = slot.call, None
        try:
            reports: list[ChunkReport] = ray.get(call)
        except Exception as e:  # a dead actor, or anything the call raised: replace the actor, retry
            self._kill(slot)
            cause = getattr(e, "cause", None) or e
            kind = "the actor died" if isinstance(e, RayActorError) else type(cause).__name__
            line = (str(cause).strip().splitlines() or [""])[-1][:500]
            reports = [ChunkReport(s.plan.stream, s.next_chunk, False, f"{kind}: {line}", retryable=True)
                       for s in slot.running]
        for stream, report in zip(slot.running, reports):
            self._record(stream, report)
            if stream.done and slot.actor is not None:
                slot.actor.forget.remote(stream.plan.stream)
        # Streams that failed together retry together: stepped in the same batch as before, they round alike.
        retrying = [s for s in slot.running if not s.done and s.retry_at > time.monotonic()]
        for s in retrying:
            s.retry_at = max(r.retry_at for r in retrying)

    def _record(self, stream: StreamProgress, report: ChunkReport) -> None:
        if report.ok:
            stream.next_chunk += 1
            stream.computed += 1
            stream.frames += report.frames
            stream.attempts = 0
            stream.peak_rss_mb = max(stream.peak_rss_mb, report.peak_rss_mb)
            for k, v in report.seconds.items():
                stream.seconds[k] = stream.seconds.get(k, 0.0) + v
            if self.progress is not None:
                self.progress.update(report.frames)
            return
        if report.bad_snapshot:  # not an attempt: each such restart begins strictly earlier, down to chunk 0
            stream.next_chunk = restart_chunk(stream.plan, self.output, report.chunk - 1)
            stream.notes.append(f"snapshot before chunk {report.chunk} not resumed ({report.error}): recomputed "
                                f"from chunk {stream.next_chunk}")
            return
        stream.attempts += 1
        if not report.retryable or stream.attempts > self.config.max_retries:
            tries = f" (gave up after {stream.attempts} attempts)" if report.retryable else ""
            stream.error = f"chunk {report.chunk}: {report.error}{tries}"
            return
        stream.retry_at = time.monotonic() + self.config.backoff(stream.attempts)
        try:  # the snapshot the chunk starts from may be what was lost
            stream.next_chunk = restart_chunk(stream.plan, self.output, stream.next_chunk)
        except Exception:  # the store is down: the retry will find out again
            pass
