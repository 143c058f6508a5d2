"""jobs.train's reports: validation J&F of the real tracker on val-split videos, and the curves PNG.

tracker_jf is also the scoring loop of benchmarks (ablations, memory_policies): one home for "J&F of the real
tracker on synthetic videos"."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from model import MemoryPolicy, Prompt, StreamingTracker
from model.metrics import davis_summary, frame_scores, object_score, reappearance_frames
from model.synthetic import SyntheticConfig, reappearances, render_video, split_seed
from workers.synthetic_corpus import first_frame_prompts


def _val_prompt(p: dict, video, t: int, ids: list[int], kind: str) -> Prompt:
    if kind == "mask":
        return Prompt(p["object_id"], mask=video.masks[t, ids.index(p["object_id"])])
    return Prompt(p["object_id"], points=p.get("points"), labels=p.get("labels"), box=p.get("box"))


def evaluate_jf(model, args, device) -> dict:
    """J&F of the real StreamingTracker on val videos at the model's size, prompted on their first frame
    (--val-prompt)."""
    S = model.cfg.image_size
    return tracker_jf(model, "val", args.val_videos, SyntheticConfig(height=S, width=S, num_frames=args.val_frames),
                      args.val_prompt)


def tracker_jf(model, split: str, videos: int, cfg: SyntheticConfig, prompt: str, first: int = 0,
               policy: MemoryPolicy | None = None, min_hidden: int = 5) -> dict:
    """DAVIS J&F (the prompted frame left out) of the real StreamingTracker (memory `policy`, default the
    reference's) on videos first..first+videos-1 of `split` rendered with `cfg`, each object prompted (`prompt`:
    mask, box or points) on its first frame of min_prompt_area pixels; plus "reappear_J&F": the same over the 5
    frames after each return from >= `min_hidden` hidden frames (model.metrics.reappearance_frames), as
    jobs.evaluate scores it, and the tracking loop's cost (JFTally.summary)."""
    tracker = StreamingTracker(model, policy)  # puts the model in eval mode; a trainer restores train mode
    tally = JFTally(min_hidden)
    for i in range(first, first + videos):
        score_video(tracker, render_video(split_seed(split, i), cfg), f"{split}-{i}", prompt, tally)
    return tally.summary()


@dataclass
class JFTally:
    """Per-object scores of the videos tracked so far (for davis_summary), and what tracking them cost."""

    min_hidden: int = 5  # a reappearance is a return after at least this many hidden frames
    vids: list[str] = field(default_factory=list)  # per object: its video's name, J and F means
    js: list[float] = field(default_factory=list)
    fs: list[float] = field(default_factory=list)
    rvids: list[str] = field(default_factory=list)  # the same over reappearance frames (objects with some)
    rjs: list[float] = field(default_factory=list)
    rfs: list[float] = field(default_factory=list)
    reappearances: int = 0  # returns scored (after the object's prompt)
    frames: int = 0  # frames stepped, over all videos
    seconds: float = 0.0  # wall time of the tracker's steps and mask reads (no rendering, no scoring)
    state_bytes: float = 0.0  # the largest TrackerState.nbytes per object at the end of a video
    resident_bytes: float | None = None  # the same of `resident_nbytes` (with derived caches), where states have it

    def summary(self) -> dict:
        out = davis_summary(self.vids, self.js, self.fs)
        out["reappear_J&F"] = davis_summary(self.rvids, self.rjs, self.rfs)["JF"] if self.rvids else float("nan")
        out["reappear_objects"] = len(self.rvids)
        out["reappearances"] = self.reappearances
        out["frames_tracked"] = self.frames
        out["frames_per_s"] = self.frames / self.seconds if self.seconds else float("nan")
        out["state_bytes_per_object"] = self.state_bytes
        out["resident_bytes_per_object"] = self.resident_bytes
        return out


def score_video(tracker, video, name: str, prompt: str, tally: JFTally) -> None:
    """Track one video from first-frame prompts of kind `prompt` and add its objects' scores to `tally`."""
    kind = "points" if prompt == "mask" else prompt  # the mask itself comes from the truth
    H, W = video.frames.shape[1:3]
    prompts = first_frame_prompts(video, kind, min_area=max(4, H * W // 1024))
    per_frame, state = _track(tracker, video, prompts, prompt, tally)
    _sample_state(state, tally)
    ids = [int(o) for o in video.object_ids]
    for oid, (frames, j, f) in per_frame.items():
        s = object_score(j, f)
        tally.vids.append(name)
        tally.js.append(s.J)
        tally.fs.append(s.F)
        visible = video.visible[:, ids.index(oid)]
        scored = set(frames)
        tally.reappearances += sum(t in scored for t in reappearances(visible, tally.min_hidden))
        back = set(reappearance_frames(visible, tally.min_hidden))
        keep = [k for k, t in enumerate(frames) if t in back]
        if keep:
            r = object_score([j[k] for k in keep], [f[k] for k in keep])
            tally.rvids.append(name)
            tally.rjs.append(r.J)
            tally.rfs.append(r.F)


def _sample_state(state, tally: JFTally) -> None:
    """The state's bytes per object at the end of a video, kept when the largest so far."""
    count = max(len(state.objects), 1)
    tally.state_bytes = max(tally.state_bytes, state.nbytes / count)
    resident = getattr(state, "resident_nbytes", None)  # the derived caches too, where TrackerState counts them
    if resident is not None:
        resident = resident() if callable(resident) else resident
        tally.resident_bytes = max(tally.resident_bytes or 0.0, resident / count)


def _track(tracker, video, prompts: list[dict], kind: str, tally: JFTally | None = None):
    """({object: (frames scored, J per frame, F per frame)}, the final TrackerState) of one video tracked from
    `prompts`; the steps' frames and seconds are added to `tally`."""
    H, W = video.frames.shape[1:3]
    state = tracker.new_stream(H, W)
    ids = [int(o) for o in video.object_ids]
    scores = {p["object_id"]: ([], [], []) for p in prompts}
    starts: dict[int, int] = {}
    for p in prompts:
        starts.setdefault(p["object_id"], p["frame_index"])  # DAVIS leaves each object's prompted frame out
    for t in range(video.frames.shape[0]):
        now = [_val_prompt(p, video, t, ids, kind) for p in prompts if p["frame_index"] == t]
        tick = time.perf_counter()
        res = tracker.step(state, video.frames[t], now)
        masks = {oid: res[oid].mask.cpu().numpy() for oid in res.object_ids if t > starts[oid]}
        if tally is not None:
            tally.seconds += time.perf_counter() - tick
            tally.frames += 1
        for oid, mask in masks.items():
            j, f = frame_scores(mask, video.masks[t, ids.index(oid)])
            scores[oid][0].append(t)
            scores[oid][1].append(j)
            scores[oid][2].append(f)
    return scores, state


def _panel(draw: ImageDraw.ImageDraw, box, xs, ys, title: str, color) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    draw.text((x0 + 4, y0 + 4), title, fill=(0, 0, 0))
    if not pts:
        return
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    sx = lambda x: x0 + 10 + (x - xmin) / max(xmax - xmin, 1e-9) * (x1 - x0 - 20)
    sy = lambda y: y1 - 10 - (y - ymin) / max(ymax - ymin, 1e-9) * (y1 - y0 - 40)
    draw.text((x0 + 4, y0 + 16), f"min {ymin:.4g}  max {ymax:.4g}  steps {xmin}-{xmax}", fill=(90, 90, 90))
    line = [(sx(x), sy(y)) for x, y in pts]
    draw.line(line, fill=color, width=2) if len(line) > 1 else draw.ellipse([*line[0], *line[0]], outline=color)


def plot_curves(log: Path, png: Path) -> None:
    """Training loss (log scale) and validation J&F of a jobs.train log against the step, drawn with PIL."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_JF" in r]
    img = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(img)
    _panel(draw, (10, 10, 790, 290), [r["step"] for r in train],
           [math.log10(max(r["loss"], 1e-9)) for r in train], "train loss (log10)", (200, 30, 30))
    _panel(draw, (10, 305, 790, 590), [r["step"] for r in val], [r["val_JF"] for r in val], "val J&F", (30, 30, 200))
    tmp = png.with_name(f".{png.name}.tmp")  # never a torn PNG
    img.save(tmp, format="PNG")
    tmp.replace(png)
