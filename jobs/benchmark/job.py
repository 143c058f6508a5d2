"""The benchmark's out-of-process parts: the segment job against our tracker alone (the same number of actors /
processes and threads), and peak memory against video length, every length in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import numpy as np

from model import Prompt
from model.memory_policy_spec import policy_spec

from .memory import free_bytes
from .probe import ProbeSpec, run_probes
from .report import Row
from .scene import render_frame


def _spec(bench, kind: str, system: str, **kw) -> ProbeSpec:
    c = bench.cfg
    ours = system == "samstream"
    return ProbeSpec(kind, system, c.preset, c.image_size, bench.weights, c.device,
                     c.dtype if ours else c.reference_dtype, c.threads, c.objects, c.compile and ours,
                     policy_spec(c.policy) if ours else "default", **kw)


# ---------------------------------------------------------------------------------------------- job

def prompt_json(p: Prompt) -> dict:
    """A frame-0 prompt as a manifest row holds it (masks as COCO RLE)."""
    from workers.masklets import encode_masks

    d = {"object_id": p.object_id, "frame_index": 0}
    if p.mask is not None:
        d["mask"] = {"size": list(p.mask.shape), "counts": encode_masks(p.mask[None])[0][0]}
    elif p.box is not None:
        d["box"] = list(p.box)
    else:
        d["points"], d["labels"] = p.points, p.labels
    return d


def write_corpus(bench, videos: int) -> tuple[Path, list[str]]:
    """`videos` copies of the benchmark's video as H.264 mp4, and a manifest with the same frame-0 prompts."""
    from workers.video_writer import write_mp4

    cfg, folder = bench.cfg, bench.work / "corpus"
    folder.mkdir(exist_ok=True)
    frames = np.stack([render_frame(t, cfg.image_size, cfg.objects) for t in range(cfg.frames)])
    first = write_mp4(folder / "v0.mp4", frames)
    urls = [str(first)] + [shutil.copyfile(first, folder / f"v{i}.mp4") for i in range(1, videos)]
    urls = [str(u) for u in urls]
    prompts = [prompt_json(p) for p in bench.prompts]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"url": u, "video_id": f"v{i}", "prompts": prompts}) + "\n"
                                for i, u in enumerate(urls)))
    return manifest, urls


def bench_job(bench) -> None:
    """For each actor count: the whole segment job (median of the repeats), then our tracker alone in as many
    processes on the same videos, pre-decoded, stepping as many streams together as an actor does."""
    from cluster.connect import actor_resources, ray_session

    cfg = bench.cfg
    videos = max(cfg.actors)
    manifest, urls = write_corpus(bench, videos)
    local = not (cfg.address or os.environ.get("RAY_ADDRESS"))
    with ray_session(cfg.address, None, 0 if cfg.device == "cpu" and local else None) as resources:
        gpus = int(resources.get("GPU", 0))
        if (gpus > 0) != (cfg.device == "cuda"):
            bench.notes.append(f"job: the Ray cluster's actors ran on {'GPUs' if gpus else 'CPUs'}, not "
                               f"--device {cfg.device}")
        done = set()
        for a in cfg.actors:
            n = min(actor_resources(resources, a, cfg.threads)[0], videos)
            if n != a:
                bench.notes.append(f"job: --actors {a} asked for, the cluster and corpus fit {n}")
            if n not in done:
                done.add(n)
                _job_rows(bench, manifest, urls, n, 4 if gpus else 1)


def _job_rows(bench, manifest: Path, urls: list[str], actors: int, per_actor: int) -> None:
    from cluster.config import RunConfig
    from cluster.manifest import read_manifest
    from cluster.run import run_segment
    from workers.tasks import ModelSpec

    cfg = bench.cfg
    spec = ModelSpec(cfg.preset, bench.weights, cfg.image_size, cfg.policy, fill_hole_area=0, dtype=cfg.dtype,
                     compile=cfg.compile)
    summaries, alone = [], []
    for rep in range(cfg.repeats):  # alternated, as the in-process configurations are
        config = RunConfig(out=str(bench.work / f"job-a{actors}-{rep}"), model=spec, actors=actors,
                           streams_per_actor=per_actor, threads_per_actor=cfg.threads, address=cfg.address,
                           progress=False)
        summary = run_segment(read_manifest(str(manifest)), config)
        if summary.videos_failed:
            raise RuntimeError(f"segment job with {actors} actors failed: {summary.errors}")
        summaries.append(summary)
        alone.append(_alone(bench, urls, actors, per_actor, rep))
    summary = sorted(summaries, key=lambda s: s.frames_per_s)[len(summaries) // 2]
    bench.rows.append(_job_row(summary, actors, len(urls), cfg.frames))
    fps = statistics.median(a[0] for a in alone)
    kind = "cuda_max_allocated" if cfg.device == "cuda" else "rss_peak"
    bench.rows.append(Row("samstream", "alone", cfg.frames, streams=len(urls), actors=actors, frames_per_s=fps,
                          ms_per_frame=1000.0 / fps, ms_model=1000.0 * actors / fps,
                          peak_mem_mb=max(a[1] for a in alone), memory_kind=kind,
                          note="frames pre-decoded in each process; ms_model: process seconds per frame"))


def _job_row(summary, actors: int, videos: int, frames: int) -> Row:
    s, total = summary.stage_seconds, summary.frames

    def ms(*keys: str) -> float:
        return 1000.0 * sum(s.get(k, 0.0) for k in keys) / total

    fps = summary.frames_per_s
    return Row("samstream", "job", frames, streams=videos, actors=actors, frames_per_s=fps, ms_per_frame=1000.0 / fps,
               ms_decode=ms("decode"), ms_model=ms("model"), ms_rle_write=ms("encode", "write"),
               ms_snapshot=ms("snapshot"), peak_mem_mb=summary.actor_peak_rss_mb, memory_kind="actor_rss_peak",
               note=f"end to end {summary.seconds:.1f} s; stage ms: actor seconds per frame")


def _alone(bench, urls: list[str], processes: int, per_actor: int, rep: int) -> tuple[float, float]:
    """(aggregate frames/s, largest peak) of `processes` tracker processes side by side, the videos dealt out
    in turn."""
    barrier = bench.work / f"barrier-a{processes}-{rep}"
    barrier.mkdir()
    specs = [_spec(bench, "alone", "samstream", videos=tuple(urls[i::processes]), streams=per_actor,
                   barrier=str(barrier), parties=processes) for i in range(processes)]
    results = run_probes(specs)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["frames"] for r in results) / seconds, max(r["peak_mem_mb"] or 0.0 for r in results)


# ---------------------------------------------------------------------------------------------- memory

def bench_memory(bench) -> None:
    """Peak memory of each system per video length, one fresh process per measurement."""
    cfg = bench.cfg
    systems = list(cfg.memory_systems)
    if bench.ref_reason and "reference" in systems:
        bench.notes.append(f"memory: reference skipped: {bench.ref_reason}")
        systems.remove("reference")
    bench.notes.append("memory rows: ours renders its frames on the fly (their generation is in its frames/s); "
                       "the reference reads its JPEG folder; the peak is taken from the moment the model was "
                       "built (mem_baseline_mb, so loading transients are left out) and includes the model")
    for n in cfg.memory_lengths:
        for system in systems:
            why = _too_big(bench, n) if system == "reference" else None
            if why:
                bench.notes.append(why)
                continue
            folder = bench.folder(n) if system == "reference" else None
            res = run_probes([_spec(bench, "memory", system, frames=n, folder=folder)])[0]
            fps = res["frames"] / res["seconds"]
            bench.rows.append(Row(system, "memory", res["frames"], frames_per_s=fps, ms_per_frame=1000.0 / fps,
                                  setup_s=res["setup_s"], peak_mem_mb=res["peak_mem_mb"],
                                  mem_baseline_mb=res["mem_baseline_mb"], memory_kind=res["memory_kind"],
                                  state_kib_per_object=res.get("state_kib_per_object"),
                                  resident_kib_per_object=res.get("resident_kib_per_object")))


def _too_big(bench, n: int) -> str | None:
    """Why the reference cannot hold an n-frame video here (it keeps every frame as float32), or None."""
    size = bench.cfg.image_size
    need = n * 3 * size * size * 4
    free = free_bytes(bench.device)
    if free is not None and need > 0.8 * free:
        return (f"memory at {n} frames: reference skipped: its frames alone take {need / 2**30:.1f} GiB, "
                f"{free / 2**30:.1f} GiB available")
    return None
