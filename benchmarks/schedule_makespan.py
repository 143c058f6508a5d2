"""The scheduler against the ideal: makespan of the real driver loop (cluster.schedule.Scheduler, real Ray
actors) over an unbalanced corpus, with a stand-in worker that sleeps per frame instead of running a model.

    python -m benchmarks.schedule_makespan [--actors 8] [--ms-per-frame 1.0] [--streams-per-actor 1]

The corpus: one long video and many short ones, each short video's per-frame cost drawn at random (as the
number of objects varies a real one's), unknown to the scheduler, which only sees frame counts. Both
assignments run the same corpus: "dynamic" (streams handed to whichever actor has a free stream slot) and
"static" (every stream dealt up front, by frame count). The ideal is max(the longest stream, the total work
divided by the actors). Every actor is held until one shared start instant, so actor start-up (process,
imports) is not counted: each actor, once constructed, waits for all the others (a barrier of files in the
output dir), and the makespan runs from that instant to the last call's end, both read from the stand-ins.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workers.tasks import ChunkReport, ChunkTask, ModelSpec

SIM_FILE = "_sim.json"  # in the run's output dir: the stand-in's costs and the number of actors
LOG_DIR = "_sim_log"  # per actor process: a ready file, then one JSON line per call
BARRIER_MARGIN_S = 0.2  # after the last actor is ready, so that every actor has seen it before the start


class SleepingWorker:
    """A stand-in for workers.stream_worker.StreamWorker with its constructor and run/forget/pid methods: it
    sleeps `ms_per_frame[video]` per frame of each chunk (streams of one call in turn) and logs each call."""

    def __init__(self, spec: ModelSpec, out_url: str, storage_options: dict | None = None,
                 num_threads: int | None = None):
        sim = json.loads((Path(out_url) / SIM_FILE).read_text())
        self.ms_per_frame = sim["ms_per_frame"]
        name = f"{time.time_ns()}-{id(self)}"
        self.log = Path(out_url) / LOG_DIR / f"{name}.jsonl"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        wait_for_all(self.log.parent, name, sim["actors"])

    def pid(self) -> int:
        return os.getpid()

    def forget(self, stream: int) -> None:
        pass

    def run(self, tasks: list[ChunkTask]) -> list[ChunkReport]:
        start = time.time()
        time.sleep(sum((t.stop - t.start) * self.ms_per_frame[t.video_id] for t in tasks) / 1000)
        with self.log.open("a") as f:
            f.write(json.dumps({"streams": [t.stream for t in tasks], "start": start, "end": time.time()}) + "\n")
        return [ChunkReport(t.stream, t.chunk, True, frames=t.stop - t.start) for t in tasks]


def wait_for_all(folder: Path, name: str, actors: int) -> float:
    """Announce this actor ready and return at the shared start instant: the last ready time plus a margin."""
    (folder / f"{name}.ready").write_text(str(time.time()))
    while len(ready := list(folder.glob("*.ready"))) < actors:
        time.sleep(0.01)
    start = max(float(f.read_text()) for f in ready) + BARRIER_MARGIN_S
    time.sleep(max(0.0, start - time.time()))
    return start


def start_instant(folder: Path) -> float:
    return max(float(f.read_text()) for f in folder.glob("*.ready")) + BARRIER_MARGIN_S


@dataclass(frozen=True)
class Corpus:
    """Frames and per-frame cost (ms) of each video; video 0 is the long one."""

    frames: tuple[int, ...]
    ms_per_frame: tuple[float, ...]

    def seconds(self, i: int) -> float:
        return self.frames[i] * self.ms_per_frame[i] / 1000

    def ideal(self, actors: int) -> float:
        work = [self.seconds(i) for i in range(len(self.frames))]
        return max(max(work), sum(work) / actors)


def unbalanced_corpus(seed: int = 0, shorts: int = 120, long_frames: int = 3000, short_frames: int = 100,
                      ms_per_frame: float = 1.0) -> Corpus:
    """One long video at the base cost, and `shorts` short ones at 1 to 5 times it (uniform)."""
    rng = random.Random(seed)
    costs = [ms_per_frame] + [ms_per_frame * rng.uniform(1.0, 5.0) for _ in range(shorts)]
    return Corpus((long_frames,) + (short_frames,) * shorts, tuple(round(c, 3) for c in costs))


@dataclass(frozen=True)
class Makespan:
    assignment: str
    seconds: float  # from the shared start instant to the last call's end
    ideal: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.ideal


def corpus_plans(corpus: Corpus, chunk_frames: int):
    from cluster.manifest import VideoEntry
    from cluster.plan import StreamPlan
    from workers.video_source import VideoInfo

    plans = []
    for i, n in enumerate(corpus.frames):
        entry = VideoEntry(i, f"sim://{i}", f"v{i}")
        info = VideoInfo(entry.url, n, 30.0, 64, 64)
        chunks = tuple((s, min(s + chunk_frames, n)) for s in range(0, n, chunk_frames))
        plans.append(StreamPlan(i, entry, info, chunks, (), {1: 0}))
    return plans


def measure(corpus: Corpus, assignment: str, actors: int = 8, streams_per_actor: int = 1, chunk_frames: int = 100,
            out: str | None = None) -> Makespan:
    """One run of the real Scheduler over `corpus` with SleepingWorker actors (Ray must be initialised)."""
    from cluster.config import RunConfig
    from cluster.schedule import Scheduler, StreamProgress

    out = out or tempfile.mkdtemp(prefix=f"sim-{assignment}-")
    Path(out).mkdir(parents=True, exist_ok=True)
    if len(corpus.frames) < actors:
        raise ValueError(f"the corpus has {len(corpus.frames)} videos, fewer than the {actors} actors to start")
    sim = {"ms_per_frame": {f"v{i}": c for i, c in enumerate(corpus.ms_per_frame)}, "actors": actors}
    (Path(out) / SIM_FILE).write_text(json.dumps(sim))
    config = RunConfig(out=out, model=ModelSpec("sim"), chunk_frames=chunk_frames, progress=False)
    scheduler = Scheduler(config, actors, {"num_cpus": 0}, streams_per_actor, worker=SleepingWorker,
                          assignment=assignment)
    streams = [StreamProgress(p, 0) for p in corpus_plans(corpus, chunk_frames)]
    scheduler.run(streams)
    failed = [s.error for s in streams if s.error]
    if failed or not all(s.done for s in streams):
        raise RuntimeError(f"simulation did not complete: {failed[:3]}")
    log = Path(out) / LOG_DIR
    calls = [json.loads(line) for f in log.glob("*.jsonl") for line in f.read_text().splitlines()]
    return Makespan(assignment, max(c["end"] for c in calls) - start_instant(log), corpus.ideal(actors))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=8)
    ap.add_argument("--streams-per-actor", type=int, default=1)
    ap.add_argument("--ms-per-frame", type=float, default=1.0, help="the long video's per-frame cost")
    ap.add_argument("--shorts", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON line per assignment")
    args = ap.parse_args(argv)
    import ray

    corpus = unbalanced_corpus(args.seed, args.shorts, ms_per_frame=args.ms_per_frame)
    ray.init(address="local", num_cpus=args.actors, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        for assignment in ("dynamic", "static"):
            m = measure(corpus, assignment, args.actors, args.streams_per_actor)
            if args.json:
                print(json.dumps({"assignment": assignment, "seconds": m.seconds, "ideal": m.ideal, "ratio": m.ratio}))
            else:
                print(f"{assignment:8s} makespan {m.seconds:6.2f} s  ideal {m.ideal:6.2f} s  ratio {m.ratio:.3f}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
