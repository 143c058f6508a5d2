"""jobs.train's reports: validation J&F of the real tracker on val-split videos, and the curves PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from model import Prompt, StreamingTracker
from model.metrics import davis_summary, frame_scores, object_score, reappearance_frames
from model.synthetic import SyntheticConfig, render_video, split_seed
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


def tracker_jf(model, split: str, videos: int, cfg: SyntheticConfig, prompt: str, first: int = 0) -> dict:
    """DAVIS J&F (the prompted frame left out) of the real StreamingTracker on videos first..first+videos-1 of
    `split` rendered with `cfg`, each object prompted (`prompt`: mask, box or points) on its first frame of
    min_prompt_area pixels; plus "reappear_J&F": the same over the 5 frames after each return from >= 5
    hidden frames (model.metrics.reappearance_frames), as jobs.evaluate scores it."""
    tracker = StreamingTracker(model)  # puts the model in eval mode; a trainer restores train mode
    vids, js, fs, rvids, rjs, rfs = [], [], [], [], [], []
    for i in range(first, first + videos):
        video = render_video(split_seed(split, i), cfg)
        kind = "points" if prompt == "mask" else prompt  # the mask itself comes from the truth
        prompts = first_frame_prompts(video, kind, min_area=max(4, cfg.height * cfg.width // 1024))
        per_frame = _track(tracker, video, prompts, prompt)
        ids = [int(o) for o in video.object_ids]
        for oid, (frames, j, f) in per_frame.items():
            s = object_score(j, f)
            vids.append(f"{split}-{i}")
            js.append(s.J)
            fs.append(s.F)
            back = set(reappearance_frames(video.visible[:, ids.index(oid)]))
            keep = [k for k, t in enumerate(frames) if t in back]
            if keep:
                r = object_score([j[k] for k in keep], [f[k] for k in keep])
                rvids.append(f"{split}-{i}")
                rjs.append(r.J)
                rfs.append(r.F)
    out = davis_summary(vids, js, fs)
    out["reappear_J&F"] = davis_summary(rvids, rjs, rfs)["JF"] if rvids else float("nan")
    out["reappear_objects"] = len(rvids)
    return out


def _track(tracker, video, prompts: list[dict], kind: str) -> dict[int, tuple[list[int], list, list]]:
    """{object: (frames scored, J per frame, F per frame)} of one video tracked from `prompts`."""
    H, W = video.frames.shape[1:3]
    state = tracker.new_stream(H, W)
    ids = [int(o) for o in video.object_ids]
    scores = {p["object_id"]: ([], [], []) for p in prompts}
    for t in range(video.frames.shape[0]):
        now = [_val_prompt(p, video, t, ids, kind) for p in prompts if p["frame_index"] == t]
        res = tracker.step(state, video.frames[t], now)
        for oid in res.object_ids:
            if t > next(p["frame_index"] for p in prompts if p["object_id"] == oid):  # DAVIS skips the prompt
                j, f = frame_scores(res[oid].mask.cpu().numpy(), video.masks[t, ids.index(oid)])
                scores[oid][0].append(t)
                scores[oid][1].append(j)
                scores[oid][2].append(f)
    return scores


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
