"""The README's first command: a sample corpus, a local Ray, the segment job, and a summary.

Generates a few short videos of moving shapes (with prompts from their known geometry), runs jobs.segment
on them with the embedded default model on 2 actors, and reads the masklet table back. Until the trained
embedded model lands, the default is `synthetic-tiny` with random weights: the pipeline is real, the masks
are not meaningful yet.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from jobs import segment
from workers.masklets import read_masklets
from workers.preview import write_contact_sheet, write_preview_video
from workers.video_writer import write_mp4


def sample_video(num_frames: int, height: int, width: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """(T, H, W, 3) uint8 frames of a disc and a square drifting over texture, and first-frame prompts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 40 * np.sin(xx / 19.0 + seed), 90 + 30 * np.cos(yy / 13.0), 100 + 0 * xx], -1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    r, s = 0.15 * height, 0.1 * height
    for t in range(num_frames):
        img = base + rng.normal(0, 5, base.shape)
        cx, cy = width * (0.25 + 0.4 * t / num_frames), height * 0.4
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = (220, 50, 40)
        sx, sy = width * (0.75 - 0.3 * t / num_frames), height * 0.7
        img[(abs(xx - sx) < s) & (abs(yy - sy) < s)] = (40, 200, 90)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    prompts = [{"object_id": 1, "points": [[0.25 * width, 0.4 * height]], "labels": [1]},
               {"object_id": 2, "box": [0.75 * width - s, 0.7 * height - s, 0.75 * width + s, 0.7 * height + s]}]
    return frames, prompts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__)
    ap.add_argument("--out", default="out/demo", help="where the corpus and the output go")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--preset", default="synthetic-tiny")
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.videos):
        frames, prompts = sample_video(args.frames, 240, 320, seed=i)
        path = write_mp4(out / "corpus" / f"clip{i}.mp4", frames)
        rows.append({"url": str(path.resolve()), "video_id": f"clip{i}", "prompts": prompts})
    manifest = out / "corpus" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray stays on loopback
    job_args = ["--manifest", str(manifest), "--out", str(out / "masks"), "--preset", args.preset,
                "--chunk-frames", "32", "--actors", "2"]
    code = segment.main(job_args + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    table = read_masklets(str(out / "masks")).to_pandas()
    per_object = table.groupby(["video_id", "object_id"]).agg(frames=("frame_index", "count"),
                                                              visible=("visible", "mean"), area=("area", "mean"))
    print(per_object.to_string())
    first = rows[0]
    clip = table[table.video_id == first["video_id"]]
    video = write_preview_video(first["url"], clip, out / "preview" / f"{first['video_id']}.mp4")
    sheet = write_contact_sheet(first["url"], clip, out / "preview" / f"{first['video_id']}.png")
    print(f"preview: {video} and {sheet}")
    print(f"read it back: pandas.read_parquet('{out / 'masks' / 'masklets'}')")
    return code


if __name__ == "__main__":
    sys.exit(main())
