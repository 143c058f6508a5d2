"""A small corpus of real mp4 files with prompts, and the segment run and read-back the job tests share."""

import json
import threading
import time
from pathlib import Path

import numpy as np

from cluster.config import RunConfig
from cluster.manifest import read_manifest
from cluster.run import RunSummary, run_segment
from model import embedded_checkpoint
from tests.encoded_videos import write_video
from tests.videos import moving_shapes
from workers.output import read_masklets
from workers.tasks import ModelSpec

REPO = Path(__file__).resolve().parents[1]
H, W = 72, 96


def prompts_json(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    x, y = float(rng.uniform(10, 40)), float(rng.uniform(10, 30))
    return [{"object_id": 1, "points": [[0.3 * W, 0.35 * H]], "labels": [1]},
            {"object_id": 2, "box": [x, y, x + 30, y + 25]},
            {"object_id": 3, "points": [[0.5 * W, 0.8 * H], [5, 5]], "labels": [1, 0]}]


def make_corpus(folder: Path, lengths: list[int], prefix: str = "v") -> Path:
    rows = []
    for i, n in enumerate(lengths):
        path = write_video(folder / f"{prefix}{i}.mp4", moving_shapes(n, H, W, seed=10 + i), fps=24)
        rows.append({"url": str(path), "video_id": f"{prefix}{i}", "prompts": prompts_json(i)})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def run(manifest: Path | str, out: str, **kw) -> RunSummary:
    model = ModelSpec("synthetic-tiny", embedded_checkpoint("synthetic-tiny"))
    config = RunConfig(out=out, model=model, progress=False, **kw)
    return run_segment(read_manifest(str(manifest), kw.get("storage_options")), config)


def sorted_table(out: str, storage_options=None):
    t = read_masklets(out, storage_options).to_pandas()
    return t.sort_values(["video_id", "object_id", "frame_index"]).reset_index(drop=True)


def run_killing_an_actor(start, out: Path, timeout: float = 600) -> RunSummary:
    """Call `start()` (a run writing to `out`) in a thread; once its first part appears, kill one of its worker
    actors (ray.kill: the process dies mid-chunk); return the run's summary."""
    import ray
    result = {}
    worker = threading.Thread(target=lambda: result.update(summary=start()))
    worker.start()
    deadline = time.time() + 120
    while not list(out.glob("masklets/*/part-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    victims = [a for a in ray.util.list_named_actors() if a.startswith("samstream-")]
    assert victims, "no worker actor found"
    ray.kill(ray.get_actor(victims[0]))
    worker.join(timeout)
    return result["summary"]
