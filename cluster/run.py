"""One segment run end to end: plan, resume, schedule, then the run's records (videos.parquet, _run.json,
_SUCCESS last)."""

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import fsspec
import pyarrow as pa
from tqdm import tqdm

from workers.masklets import MaskletWriter, part_relpath
from workers.tasks import ModelSpec

from .connect import actor_resources, ray_session
from .plan import plan_streams, probe_all
from .schedule import Scheduler, StreamProgress, resume_point

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("objects", pa.int32()), ("seconds", pa.float64()),
])


@dataclass(frozen=True)
class RunConfig:
    out: str
    model: ModelSpec
    chunk_frames: int = 64
    actors: int | None = None
    streams_per_actor: int | None = None  # None: 4 with GPUs, 1 on CPU
    threads_per_actor: int = 1  # torch threads of each actor (fixed, so results do not depend on the pool)
    max_retries: int = 3
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    progress: bool = True
    storage_options: dict | None = None  # never written or printed

    @classmethod
    def from_args(cls, args, storage_options: dict) -> "RunConfig":
        from model import MemoryPolicy, get_config, resolve_checkpoint
        checkpoint = resolve_checkpoint(args.preset, args.checkpoint)
        get_config(args.preset, args.image_size)  # unknown presets and bad sizes fail before any work
        policy = MemoryPolicy(args.num_recent, args.max_cond, args.decay, args.store_threshold, args.num_keyframes,
                              args.keyframe_every)
        model = ModelSpec(args.preset, checkpoint, args.image_size, policy, dtype=args.dtype, compile=args.compile,
                          memory_kv_cache=not args.no_memory_kv_cache)
        return cls(out=args.out.rstrip("/"), model=model, chunk_frames=args.chunk_frames, actors=args.actors,
                   streams_per_actor=args.streams_per_actor, threads_per_actor=args.threads_per_actor,
                   max_retries=args.max_retries, address=args.address, num_cpus=args.num_cpus,
                   num_gpus=args.num_gpus, progress=not args.no_progress, storage_options=storage_options)

    def public(self) -> dict:
        d = asdict(self)
        d.pop("storage_options")
        return d


def claim_output(config: RunConfig) -> None:
    """Record the chunk plan of a new output, or check a resumed one's: part files are named by chunk
    number, so resuming with another chunk size would leave stale parts beside the new ones."""
    writer = MaskletWriter(config.out, config.storage_options or {})
    if writer.exists("_plan.json"):
        old = json.loads(writer.read_bytes("_plan.json"))["chunk_frames"]
        if old != config.chunk_frames:
            raise ValueError(f"output {writer.url} was started with --chunk-frames {old}, not "
                             f"{config.chunk_frames}: resume with the same value or write to a new --out")
    else:
        writer.write_bytes("_plan.json", json.dumps({"chunk_frames": config.chunk_frames}).encode())


def run_segment(entries, config: RunConfig) -> dict:
    so = config.storage_options or {}
    writer = MaskletWriter(config.out, so)
    started = time.time()
    plans, failures = plan_streams(entries, probe_all(entries, so), config.chunk_frames)
    streams = [StreamProgress(p, resume_point(p, writer)) for p in plans]
    for s in streams:
        s.skipped = s.next_chunk
    todo = [s for s in streams if not s.done]
    frames_todo = sum(s.plan.chunks[-1][1] - s.plan.chunks[s.next_chunk][0] for s in todo)
    if todo:
        with ray_session(config.address, config.num_cpus, config.num_gpus) as resources:
            n, request = actor_resources(resources, config.actors, config.threads_per_actor)
            per_actor = config.streams_per_actor or (4 if resources.get("GPU") else 1)
            with tqdm(total=frames_todo, unit="frame", disable=not config.progress, desc="segment") as bar:
                scheduler = Scheduler(config.model, config.out, so, min(n, len(todo)), request,
                                      config.threads_per_actor, per_actor, config.max_retries, bar)
                scheduler.run(todo)
                restarts = scheduler.restarts - min(n, len(todo))
    else:
        restarts = 0
    seconds = time.time() - started
    errors = dict(failures) | {s.plan.entry.video_id: s.error for s in streams if s.error}
    for s in streams:  # a failed video leaves no partial masklets or snapshots behind
        if s.error:
            writer.remove(part_relpath(s.plan.entry.video_id, 0, 0).rsplit("/", 1)[0])
            writer.remove(f"_state/{s.plan.stream:05d}")
    _write_videos(writer, entries, streams, errors)
    frames_done = sum(s.plan.chunks[c][1] - s.plan.chunks[c][0]
                      for s in streams for c in range(s.skipped, s.next_chunk))
    summary = {
        "videos_ok": len(entries) - len(errors), "videos_failed": len(errors), "errors": errors,
        "frames": frames_done, "seconds": seconds, "frames_per_s": frames_done / max(seconds, 1e-9),
        "chunks_total": sum(len(s.plan.chunks) for s in streams),
        "chunks_computed": sum(s.computed for s in streams), "chunks_skipped": sum(s.skipped for s in streams),
        "stage_seconds": _sum_stages(streams), "actor_replacements": restarts,
        "actor_peak_rss_mb": max((s.peak_rss_mb for s in streams), default=0.0),
    }
    writer.write_bytes("_run.json", json.dumps(_run_record(config, summary), indent=2, default=str).encode())
    if not errors:
        writer.remove("_state")  # snapshots are only for resuming
    writer.write_bytes("_SUCCESS", b"")
    return summary


def _write_videos(writer, entries, streams, errors: dict) -> None:
    """One row per manifest video; `seconds` is the actor time this run spent on it (0 when resumed whole)."""
    by_id = {s.plan.entry.video_id: s for s in streams}
    rows = []
    for e in entries:
        s = by_id.get(e.video_id)
        p = s.plan if s else None
        rows.append({"video_id": e.video_id, "url": e.url, "status": "failed" if e.video_id in errors else "ok",
                     "error": errors.get(e.video_id), "frames": p.info.num_frames if p else None,
                     "fps": p.info.fps if p else None, "width": p.info.width if p else None,
                     "height": p.info.height if p else None, "objects": len(p.first_frames) if p else None,
                     "seconds": sum(s.seconds.values()) if s else None})
    writer.write_table("videos.parquet", pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA))


def _sum_stages(streams) -> dict:
    total: dict[str, float] = {}
    for s in streams:
        for k, v in s.seconds.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _run_record(config: RunConfig, summary: dict) -> dict:
    import av
    import pyarrow
    import ray
    import torch
    return {"config": config.public(), "model_preset": config.model.preset,
            "checkpoint_sha256": _sha256(config.model.checkpoint, config.storage_options or {}),
            "versions": {"samstream": "0.1.0", "torch": torch.__version__, "ray": ray.__version__,
                         "pyarrow": pyarrow.__version__, "av": av.__version__},
            **{k: v for k, v in summary.items() if k != "errors"}}


def _sha256(url: str | None, storage_options: dict) -> str | None:
    if url is None:
        return None
    h = hashlib.sha256()
    with fsspec.open(url, "rb", **storage_options) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()
