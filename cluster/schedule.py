"""The driver loop: a pool of StreamWorker actors, streams pinned to actors, chunks in order, retries.

Each stream lives on one actor (its memory stays in that actor between chunks); an actor runs up to
`streams_per_actor` streams at once, one chunk of each per call, batched through the model. When an actor
dies, a new one takes its place and resumes its streams from their last snapshots. Chunks are idempotent
(deterministic part names, atomic writes), so a chunk that ran twice leaves one copy.
"""

import time
import uuid
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayTaskError

from workers.masklets import MaskletWriter
from workers.stream_worker import StreamWorker, snapshot_path
from workers.tasks import ChunkReport, ModelSpec

from .plan import StreamPlan


@dataclass
class StreamProgress:
    plan: StreamPlan
    next_chunk: int  # the next chunk to compute
    error: str | None = None
    computed: int = 0  # chunks computed in this run
    skipped: int = 0  # chunks found complete from an earlier run
    seconds: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # largest peak RSS reported by an actor running this stream

    @property
    def done(self) -> bool:
        return self.error is not None or self.next_chunk >= len(self.plan.chunks)


def resume_point(plan: StreamPlan, writer: MaskletWriter) -> int:
    """First chunk to compute: the first whose part is missing or incomplete, moved back to just after the
    last snapshot when the state it needs was not kept."""
    vid = plan.entry.video_id
    k = next((c for c in range(len(plan.chunks))
              if not writer.part_exists(vid, plan.stream, c, plan.expected_rows(c))), len(plan.chunks))
    while 0 < k < len(plan.chunks) and not writer.exists(snapshot_path(plan.stream, k - 1)):
        k -= 1
    return k


@dataclass
class _Slot:
    """One actor position in the pool."""

    index: int
    actor: object = None
    queue: list = field(default_factory=list)  # streams waiting for this actor
    active: list = field(default_factory=list)  # streams running on it
    call: object = None  # the in-flight ObjectRef
    tasks: list = field(default_factory=list)  # the chunk tasks of that call
    deaths: int = 0


class Scheduler:
    def __init__(self, spec: ModelSpec, out_url: str, storage_options: dict, num_actors: int, resources: dict,
                 threads: int, streams_per_actor: int = 4, max_retries: int = 3, progress=None):
        self.spec, self.out_url, self.storage_options = spec, out_url, storage_options
        self.resources, self.threads = resources, threads
        self.streams_per_actor, self.max_retries = streams_per_actor, max_retries
        self.slots = [_Slot(i) for i in range(num_actors)]
        self.progress = progress
        self.restarts = 0  # actors started so far (replacements included)
        self.run_id = uuid.uuid4().hex[:8]  # actor names unique per run: names are released lazily

    def run(self, streams: list[StreamProgress]) -> None:
        for s in streams:  # longest first onto the least loaded actor
            slot = min(self.slots, key=lambda sl: (sum(x.plan.num_frames for x in sl.queue), sl.index))
            slot.queue.append(s)
        for slot in self.slots:
            if slot.queue:
                self._submit(slot)
        while any(slot.call is not None for slot in self.slots):
            calls = [slot.call for slot in self.slots if slot.call is not None]
            ready, _ = ray.wait(calls, num_returns=1)
            slot = next(sl for sl in self.slots if sl.call == ready[0])
            self._collect(slot)
        for slot in self.slots:
            if slot.actor is not None:
                ray.kill(slot.actor)

    def _new_actor(self, slot: _Slot):
        cls = ray.remote(StreamWorker).options(name=f"samstream-{self.run_id}-worker-{slot.index}-{self.restarts}",
                                               max_restarts=0, **self.resources)
        self.restarts += 1
        return cls.remote(self.spec, self.out_url, self.storage_options, num_threads=self.threads)

    def _submit(self, slot: _Slot) -> None:
        slot.active = [s for s in slot.active if not s.done]
        while slot.queue and len(slot.active) < self.streams_per_actor:
            slot.active.append(slot.queue.pop(0))
        if not slot.active:
            slot.call = None
            return
        if slot.actor is None:
            slot.actor = self._new_actor(slot)
        slot.tasks = [s.plan.task(s.next_chunk) for s in slot.active]
        slot.call = slot.actor.run.remote(slot.tasks)

    def _collect(self, slot: _Slot) -> None:
        try:
            reports: list[ChunkReport] = ray.get(slot.call)
        except (RayActorError, RayTaskError) as e:
            self._actor_failed(slot, e)
            return
        slot.deaths = 0
        for stream, report in zip(slot.active, reports):
            self._record(stream, report)
            if stream.done:
                slot.actor.forget.remote(stream.plan.stream)
        self._submit(slot)

    def _record(self, stream: StreamProgress, report: ChunkReport) -> None:
        if not report.ok:
            stream.error = report.error
            return
        stream.next_chunk += 1
        stream.computed += 1
        stream.peak_rss_mb = max(stream.peak_rss_mb, report.peak_rss_mb)
        for k, v in report.seconds.items():
            stream.seconds[k] = stream.seconds.get(k, 0.0) + v
        if self.progress is not None:
            self.progress.update(report.frames)

    def _actor_failed(self, slot: _Slot, error: Exception) -> None:
        """A dead actor (or a call that raised) is replaced; its streams resume from their snapshots."""
        slot.deaths += 1
        if isinstance(error, RayActorError) or slot.deaths > 1:
            try:
                ray.kill(slot.actor)
            except Exception:  # already gone
                pass
            slot.actor = None
        if slot.deaths > self.max_retries:
            for s in slot.active:
                s.error = f"gave up after {slot.deaths} failed attempts: {type(error).__name__}: {error}"
            slot.deaths = 0
        time.sleep(0.1 * slot.deaths)
        self._submit(slot)
