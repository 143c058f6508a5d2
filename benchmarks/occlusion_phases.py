"""Where a tracker loses an object on the long-occlusion stress set: its masks by phase of the object's track.

benchmarks.memory_policies gives J&F overall and on the frames after long returns; this says why a return
scores what it does. Each object (prompted with its true mask on its first frame, as there) has, after its
prompt, visible frames before it first hides ("before"), hidden frames ("hidden"), the 5 frames after each
return from >= --min-hidden hidden frames ("return") and its other visible frames after a hide ("after").
Per phase and memory policy: frames, mean J, the share with an empty prediction and the share whose predicted
pixels lie mostly (> half) outside the object, i.e. on something else (its untracked double, a twin). On
hidden frames, only the shares: a non-empty mask there is always something else.

    python -m benchmarks.occlusion_phases --videos 6 --frames 600 --image-size 128 \
        --row default=default --row recent0=num_recent=0 --row recent16=num_recent=16
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.memory_policies import PRESET, add_stress_set_args, parse_rows, parse_stress_set_args
from model import Prompt, StreamingTracker, load_model, resolve_checkpoint
from model.memory_policy_spec import PolicySpecError
from model.metrics import frame_scores
from model.synthetic import reappearances, render_stress_video
from workers.synthetic_corpus import first_frame_prompts

PHASES = ("before", "return", "after", "hidden")
RETURN_FRAMES = 5  # frames after a return that count as the return (as benchmarks.memory_policies)


@dataclass
class PhaseTally:
    """Per phase: J of each frame scored, whether its prediction was empty, whether it lay mostly elsewhere."""

    js: dict = field(default_factory=lambda: {p: [] for p in PHASES})
    empty: dict = field(default_factory=lambda: {p: [] for p in PHASES})
    elsewhere: dict = field(default_factory=lambda: {p: [] for p in PHASES})

    def add(self, phase: str, pred: np.ndarray, truth: np.ndarray) -> None:
        area = int(pred.sum())
        self.empty[phase].append(area == 0)
        self.elsewhere[phase].append(area > 0 and (pred & ~truth).sum() > area / 2)
        if phase != "hidden":
            self.js[phase].append(frame_scores(pred, truth)[0])

    def summary(self) -> dict:
        mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        return {p: {"frames": len(self.empty[p]), "J": mean(self.js[p]), "empty": mean(self.empty[p]),
                    "elsewhere": mean(self.elsewhere[p])} for p in PHASES}


def phases_of(visible: np.ndarray, start: int, min_hidden: int) -> list[str | None]:
    """(T,) visible flags of one object prompted at `start` -> each frame's phase (None: not scored)."""
    out: list[str | None] = [None] * len(visible)
    back = {t + k for t in reappearances(visible, min_hidden) for k in range(RETURN_FRAMES)}
    hid = False
    for t in range(start + 1, len(visible)):
        hid = hid or not visible[t]
        out[t] = ("hidden" if not visible[t] else "return" if t in back else "after" if hid else "before")
    return out


def track_video(tracker: StreamingTracker, video, min_hidden: int, tally: PhaseTally) -> None:
    """Track one video from its objects' first-frame masks; add every scored frame to `tally`."""
    H, W = video.frames.shape[1:3]
    ids = [int(o) for o in video.object_ids]
    starts = {p["object_id"]: p["frame_index"] for p in first_frame_prompts(video, "points", max(4, H * W // 1024))}
    phases = {oid: phases_of(video.visible[:, ids.index(oid)], t, min_hidden) for oid, t in starts.items()}
    state = tracker.new_stream(H, W)
    for t in range(video.frames.shape[0]):
        now = [Prompt(oid, mask=video.masks[t, ids.index(oid)]) for oid, s in starts.items() if s == t]
        result = tracker.step(state, video.frames[t], now)
        for oid in result.object_ids:
            if phases[oid][t] is not None:
                tally.add(phases[oid][t], result[oid].mask.numpy(), video.masks[t, ids.index(oid)])


def markdown(rows: dict[str, dict]) -> str:
    head = "| row | " + " | ".join(f"{p}: frames, {'' if p == 'hidden' else 'J, '}empty, elsewhere" for p in PHASES)
    lines = [head + " |", "|---|" + "---|" * len(PHASES)]
    for name, s in rows.items():
        cells = [f"{s[p]['frames']}, " + ("" if p == "hidden" else f"{s[p]['J']:.3f}, ") +
                 f"{s[p]['empty']:.2f}, {s[p]['elsewhere']:.2f}" for p in PHASES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.occlusion_phases", description=__doc__.split("\n")[0])
    ap.add_argument("--row", action="append", default=[], metavar="NAME=SPEC",
                    help="a row: NAME=comma list of MemoryPolicy field=value, or NAME=default (repeatable)")
    add_stress_set_args(ap, videos=6, image_size=128)
    ap.add_argument("--out", type=Path, default=Path("out/occlusion_phases.json"))
    args = parse_stress_set_args(ap, argv)
    try:
        policies = parse_rows(args.row or ["default=default"], [])
    except PolicySpecError as e:
        ap.error(str(e))
    model = load_model(PRESET, resolve_checkpoint(PRESET, None))
    tallies = {name: PhaseTally() for name in policies}
    with torch.inference_mode():
        for i in range(args.videos):
            video = render_stress_video(i, args.image_size, args.frames)
            for name, policy in policies.items():
                track_video(StreamingTracker(model, policy), video, args.min_hidden, tallies[name])
            print(f"video {i + 1}/{args.videos} done", file=sys.stderr, flush=True)
    rows = {name: t.summary() for name, t in tallies.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
