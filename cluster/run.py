"""One run end to end (segment or pseudo-label): claim the output, plan, resume, schedule, verify (and, for
pseudo-labels, stitch), then the run's records (videos.parquet, _run.json, _SUCCESS last, only over a
complete, duplicate-free output)."""

import hashlib
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import fsspec
import pyarrow as pa
from tqdm import tqdm

from model.errors import SamstreamError
from workers.output import RunOutput
from workers.tracks import TRACKS_SCHEMA, count_distinct_keys

from .config import RunConfig
from .connect import actor_resources, ray_session
from .plan import StreamPlan, plan_segments, plan_streams, probe_all
from .pseudo_label import finish_video
from .schedule import Scheduler, StreamProgress, missing_chunks, remaining_frames, restart_chunk

NO_PROMPTS = "no prompts: nothing to track (the model was not run)"


class PlanMismatchError(SamstreamError):
    """An output started with another chunk plan: its parts are named by chunk (and segment) number."""

    def __init__(self, url: str, key: str, old, new):
        self.url, self.key, self.old, self.new = url, key, old, new
        labels = {"job": "job", "memory_policy": "memory policy", "weights_sha256": "weights of sha256"}
        what = labels.get(key, "--" + key.replace("_", "-"))
        same = f"--memory-policy {old}" if key == "memory_policy" else "the same value"
        super().__init__(f"output {url} was started with {what} {old}, not {new}: resume with {same} or write "
                         f"to a new --out")


class RunInterrupted(SamstreamError):
    """SIGINT or SIGTERM stopped the run; what was written stays, and rerunning resumes."""

    def __init__(self, signal_name: str, chunks_done: int, chunks_total: int, url: str):
        self.signal_name, self.chunks_done, self.chunks_total, self.url = signal_name, chunks_done, chunks_total, url
        super().__init__(f"interrupted by {signal_name}: {chunks_done} of {chunks_total} chunks are written in "
                         f"{url}; run the same command again to resume")


@dataclass(frozen=True)
class RunSummary:
    """What a run did: the job prints it, _run.json records it."""

    out: str
    videos_ok: int
    videos_failed: int
    errors: dict  # video_id -> cause, one line
    notes: dict  # video_id -> note (clipped boxes, no prompts)
    frames: int  # frames computed by this run
    seconds: float
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int  # complete from an earlier run
    chunks_recomputed: int  # found missing at verification and computed again
    actor_replacements: int
    actor_peak_rss_mb: float
    stage_seconds: dict = field(default_factory=dict)
    took_over: str | None = None  # the run whose stale claim on the output this run took over

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def run_segment(entries, config: RunConfig) -> RunSummary:
    """Claim the output (OutputClaimedError if another live run holds it), run, verify, record."""
    output = RunOutput(config.out, config.storage_options)
    run_id = uuid.uuid4().hex[:8]
    with output.claim(run_id, config.claim_timeout_s, config.layout()) as claim:
        weights_sha256 = _sha256(config.model.checkpoint, config.storage_options or {})
        _check_plan(output, config, weights_sha256)
        output.remove_success()  # until this run has verified the output
        streams, failures, notes = _plan(entries, config, output)
        with _interrupts_reported(streams, output.url):
            started = time.time()
            replacements, recomputed = _compute(streams, config, output)
            tracks = _finish_pseudo_labels(streams, config, output)
            seconds = time.time() - started
        errors = dict(failures) | {s.plan.entry.video_id: s.error for s in streams if s.error}
        for s in streams:  # a snapshot that could not be resumed (the masks are whole: recomputed before it)
            if s.notes:
                vid = s.plan.entry.video_id
                notes[vid] = "; ".join(([notes[vid]] if vid in notes else []) + s.notes)
        claim.check()  # a run whose claim was taken over must not write the records
        for vid in errors:  # a failed video leaves no partial masklets behind
            output.remove_video(vid)
        if tracks is not None:
            output.write_tracks(pa.concat_tables([t for v, t in tracks.items() if v not in errors]
                                                 or [TRACKS_SCHEMA.empty_table()]))
        output.write_videos(_video_rows(entries, streams, errors, notes, tracks))
        summary = _summary(output.url, entries, streams, errors, notes, seconds, replacements, recomputed,
                           claim.took_over)
        output.write_run_record(_run_record(config, summary, weights_sha256))
        output.remove_state()  # snapshots are only for resuming
        output.write_success()
    return summary


def _check_plan(output: RunOutput, config: RunConfig, weights_sha256: str | None) -> None:
    makers = config.makers(weights_sha256)
    plan, wanted = output.read_plan(), config.layout() | makers
    if plan is None:
        output.write_plan(wanted)
        return
    for key in ("job", *config.layout()):
        old = plan.get(key, "segment" if key == "job" else None)
        new = wanted.get(key, config.job if key == "job" else None)
        if old != new:
            raise PlanMismatchError(output.url, key, old, new)
    for key in makers:  # outputs begun before these were recorded resume as they did
        if key in plan and plan[key] != wanted[key]:
            raise PlanMismatchError(output.url, key, plan[key], wanted[key])


def _plan(entries, config: RunConfig, output: RunOutput) -> tuple[list[StreamProgress], dict, dict]:
    """Streams with their resume points; parts this plan would not write (another plan's, a failed video's)
    are removed before any new part is written."""
    so, pl = config.storage_options or {}, config.pseudo_label
    infos = probe_all(entries, so)
    plans, failures = (plan_streams(entries, infos, config.chunk_frames) if pl is None else
                       plan_segments(entries, infos, config.chunk_frames, pl.segment_frames, pl.overlap))
    notes = {p.entry.video_id: "; ".join(p.notes) for p in plans if p.notes}
    for vid in failures:
        output.remove_video(vid)
    _remove_stale_parts(output, plans)
    streams = []
    for p in plans:
        if not p.runs:
            notes[p.entry.video_id] = NO_PROMPTS
            streams.append(StreamProgress(p, len(p.chunks)))
            continue
        missing = missing_chunks(p, output)
        if not missing:
            streams.append(StreamProgress(p, len(p.chunks), skipped=len(p.chunks)))
            continue
        start, stop = restart_chunk(p, output, missing[0]), missing[-1] + 1  # complete parts between: rewritten
        streams.append(StreamProgress(p, start, stop=stop, skipped=start + len(p.chunks) - stop))
    return streams, failures, notes


def _remove_stale_parts(output: RunOutput, plans: list[StreamPlan]) -> None:
    expected: dict[str, set] = {}
    for p in plans:
        expected.setdefault(p.entry.video_id, set()).update(
            (p.stream, c) for c in range(len(p.chunks)) if p.runs)
    for vid, keep in expected.items():
        for stream, chunk in output.list_parts(vid):
            if (stream, chunk) not in keep:
                output.remove_part(vid, stream, chunk)


def _compute(streams: list[StreamProgress], config: RunConfig, output: RunOutput) -> tuple[int, int]:
    """Run what is missing, then verify and recompute what went missing meanwhile (a store that lost parts),
    up to max_retries rounds. Returns (actor replacements, chunks recomputed after verification)."""
    todo, replacements, recomputed = [s for s in streams if not s.done], 0, 0
    for round_ in range(config.max_retries + 2):
        before = sum(s.computed for s in todo)
        if todo:
            replacements += _schedule(todo, config)
        if round_:
            recomputed += sum(s.computed for s in todo) - before
        todo = _verify(streams, output, give_up=round_ == config.max_retries + 1)
        if not todo:
            break
    return replacements, recomputed


def _verify(streams: list[StreamProgress], output: RunOutput, give_up: bool) -> list[StreamProgress]:
    """Streams to recompute: every expected part must be complete and no (object, frame) appear twice."""
    again = []
    for s in streams:
        if s.error or not s.plan.runs:
            continue
        vid = s.plan.entry.video_id
        missing = missing_chunks(s.plan, output)
        if not missing and s.plan.discover_from is not None:  # checked once stitched (_finish_pseudo_labels)
            continue
        if not missing:
            keys = output.video_keys(vid)
            rows = sum(s.plan.expected_rows(c) for c in range(len(s.plan.chunks)))
            distinct = count_distinct_keys(keys)
            if keys.num_rows == rows == distinct:
                continue
            s.error = f"verification: {keys.num_rows} rows, {distinct} distinct (object, frame), {rows} expected"
            continue
        if give_up:
            s.error = f"verification: parts of chunks {missing[:10]} are missing or incomplete after recomputing"
            continue
        start = restart_chunk(s.plan, output, missing[0])
        again.append(StreamProgress(s.plan, start, stop=missing[-1] + 1, seconds=s.seconds))
    for fresh in again:  # the recomputation's progress replaces the stream's
        i = next(i for i, s in enumerate(streams) if s.plan.stream == fresh.plan.stream)
        old = streams[i]
        fresh.skipped, fresh.computed, fresh.frames, fresh.peak_rss_mb = old.skipped, old.computed, old.frames, old.peak_rss_mb
        streams[i] = fresh
    return again


def _finish_pseudo_labels(streams: list[StreamProgress], config: RunConfig, output: RunOutput) -> dict | None:
    """Pseudo-labels: stitch every complete video; {video_id: tracks table}. None for a segment run."""
    if config.pseudo_label is None:
        return None
    by_video: dict[str, list[StreamProgress]] = {}
    for s in streams:
        by_video.setdefault(s.plan.entry.video_id, []).append(s)
    tracks = {}
    for vid, group in by_video.items():
        failed = next((s for s in group if s.error), None)
        if failed is not None:
            for s in group:  # one segment failed: the video failed
                s.error = s.error or f"segment {failed.plan.segment.index}: {failed.error}"
            continue
        result = finish_video(output, [s.plan for s in group], config.pseudo_label.stitch_iou)
        if result.error:
            group[0].error = result.error
        else:
            tracks[vid] = result.table
    return tracks


def _schedule(todo: list[StreamProgress], config: RunConfig) -> int:
    frames = sum(remaining_frames(s) for s in todo)
    with ray_session(config.address, config.num_cpus, config.num_gpus) as resources:
        _trap_sigterm()
        n, request = actor_resources(resources, config.actors, config.threads_per_actor)
        per_actor = config.streams_per_actor or (4 if resources.get("GPU") else 1)
        n = min(n, len(todo))
        with tqdm(total=frames, unit="frame", disable=not config.progress, desc=config.job.replace("_", "-")) as bar:
            scheduler = Scheduler(config, n, request, per_actor, bar)
            scheduler.run(todo)
    return scheduler.actors_started - n


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _trap_sigterm() -> None:
    """SIGTERM -> _Terminated in the main thread, SIGINT -> KeyboardInterrupt. Called again once Ray is
    connected: ray.init installs a handler of its own that aborts the process. SIGINT is set explicitly because
    Python leaves it ignored where the process inherited it ignored (a job started with `&` from a script)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def _interrupts_reported(streams: list[StreamProgress], url: str):
    """SIGINT / SIGTERM during the computation -> RunInterrupted with what is written. Signal handlers can
    only be set from the main thread; elsewhere (a run inside a test's thread) SIGTERM keeps its default."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _trap_sigterm()
    try:
        yield
    except (KeyboardInterrupt, _Terminated) as e:
        name = "SIGTERM" if isinstance(e, _Terminated) else "SIGINT"
        done = sum(s.skipped + s.computed for s in streams)
        raise RunInterrupted(name, done, sum(len(s.plan.chunks) for s in streams), url) from None
    finally:
        for sig, handler in zip((signal.SIGTERM, signal.SIGINT), previous):
            if main and handler is not None:
                signal.signal(sig, handler)


def _video_rows(entries, streams: list[StreamProgress], errors: dict, notes: dict,
                tracks: dict | None = None) -> list[dict]:
    """One row per manifest video; `seconds` is the actor time this run spent on it (0 when resumed whole);
    `objects`: prompted objects, or for pseudo-labels the stitched tracks."""
    by_id: dict[str, list[StreamProgress]] = {}
    for s in streams:
        by_id.setdefault(s.plan.entry.video_id, []).append(s)
    rows = []
    for e in entries:
        group = by_id.get(e.video_id, [])
        p = group[0].plan if group else None
        objects = len(p.first_frames) if p else None
        if tracks is not None and e.video_id in tracks:
            objects = tracks[e.video_id].num_rows
        rows.append({"video_id": e.video_id, "url": e.url, "status": "failed" if e.video_id in errors else "ok",
                     "error": errors.get(e.video_id), "frames": p.info.num_frames if p else None,
                     "fps": p.info.fps if p else None, "width": p.info.width if p else None,
                     "height": p.info.height if p else None, "objects": objects,
                     "seconds": sum(v for s in group for v in s.seconds.values()) if group else None,
                     "note": notes.get(e.video_id)})
    return rows


def _summary(url: str, entries, streams: list[StreamProgress], errors: dict, notes: dict, seconds: float,
             replacements: int, recomputed: int, took_over: str | None) -> RunSummary:
    stages: dict[str, float] = {}
    for s in streams:
        for k, v in s.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    return RunSummary(
        out=url, videos_ok=len(entries) - len(errors), videos_failed=len(errors), errors=errors, notes=notes,
        frames=sum(s.frames for s in streams), seconds=seconds,
        chunks_total=sum(len(s.plan.chunks) for s in streams), chunks_computed=sum(s.computed for s in streams),
        chunks_skipped=sum(s.skipped for s in streams), chunks_recomputed=recomputed,
        actor_replacements=replacements, actor_peak_rss_mb=max((s.peak_rss_mb for s in streams), default=0.0),
        stage_seconds=stages, took_over=took_over)


def _run_record(config: RunConfig, summary: RunSummary, weights_sha256: str | None) -> dict:
    import av
    import pyarrow
    import ray
    import torch
    record = {k: v for k, v in asdict(summary).items() if k != "errors"}
    return {"config": config.public(), "model_preset": config.model.preset,
            "checkpoint_sha256": weights_sha256,
            "versions": {"samstream": "0.1.0", "torch": torch.__version__, "ray": ray.__version__,
                         "pyarrow": pyarrow.__version__, "av": av.__version__},
            **record, "frames_per_s": summary.frames_per_s}


def _sha256(url: str | None, storage_options: dict) -> str | None:
    if url is None:
        return None
    h = hashlib.sha256()
    with fsspec.open(url, "rb", **storage_options) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()
