"""Training clips for jobs.train: rendered synthetic clips and their prompt recipes, a step's worth at a time,
inline or ahead of the trainer in worker processes.

A step's clips are a pure function of (seed, step, rank) (`step_clips`), so rendering them in another process
gives the very clips the trainer would render itself: `ClipPrefetcher(n)` keeps up to 2n steps in flight in n
processes. On a 2-core CPU both cores train (no spare core to render on); on a GPU machine rendering (~85 ms
per 16-frame clip on one core at 128 px) would otherwise starve the accelerator.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..synthetic import SyntheticConfig, render_video, split_seed


@dataclass
class ClipSpec:
    """What sampling a step needs from the training arguments (picklable: it goes to worker processes)."""

    seed: int  # the run's --seed
    rank: int  # data-parallel rank: ranks see different clips
    batch: int  # clips per step
    size: int  # image size the clips are rendered at
    drop_prob: float  # chance each next frame is dropped (0..3 frames per gap)
    static_prob: float  # share of clips that repeat one frame
    max_objects: int  # objects per clip at most
    image_share: float  # share of one-frame clips prompted with a box or a click
    prompt_mix: dict[str, float]  # first-frame prompt kinds of video clips and their shares
    families: tuple[str, ...] = ()  # "kind:name" generator families to draw from (SyntheticConfig.families)


@dataclass
class RenderedClip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, O, H, W) bool, every object visible on position 0
    frame_index: list[int]  # T increasing video frame indices (gaps = dropped frames)
    prompt: str  # position 0's prompt kind
    clicks: dict[int, int]  # {position: corrective clicks}
    families: frozenset[str] = frozenset()  # "kind:name" families its video drew (model.synthetic.families)


def sample_clip(rng: np.random.Generator, index: int, length: int, spec: ClipSpec):
    """One training clip: (frames (T, H, W, 3) uint8, masks (T, O, H, W) bool, frame indices, the video's
    families) or None."""
    gaps = 1 + rng.binomial(3, spec.drop_prob, size=length - 1)  # each gap drops 0..3 frames
    span = int(gaps.sum()) + 1
    video = render_video(split_seed("train", index), SyntheticConfig(height=spec.size, width=spec.size,
                                                                     num_frames=span + 8, families=spec.families))
    start = int(rng.integers(0, 9))
    idx = np.concatenate([[start], start + np.cumsum(gaps)]).astype(int)
    # A still clip shows the same frame at every position (time still passes: the memory ages as usual).
    shown = np.full_like(idx, start) if rng.random() < spec.static_prob else idx
    min_area = max(4, spec.size * spec.size // 1024)
    keep = np.flatnonzero(video.areas[start] >= min_area)[:spec.max_objects]  # prompted on position 0
    if keep.size == 0:
        return None
    return video.frames[shown], video.masks[shown][:, keep], idx.tolist(), video.families


def image_mix(mix: dict[str, float]) -> dict[str, float]:
    """The prompt kinds of a one-frame clip: `mix` without masks (a prompted mask is its own output: nothing to
    learn on a single frame), renormalised; boxes when `mix` has nothing else."""
    rest = {k: v for k, v in mix.items() if k != "mask" and v > 0}
    total = sum(rest.values())
    return {k: v / total for k, v in rest.items()} if rest else {"box": 1.0}


def clip_recipe(rng: np.random.Generator, length: int, mix: dict[str, float]) -> tuple[str, dict[int, int]]:
    """The first frame's prompt kind drawn from `mix` (SAM 2's: a mask half the time, else a click or a box) and
    corrective clicks: on the prompt frame and on one random later frame."""
    prompt = str(rng.choice(list(mix), p=list(mix.values())))
    clicks = {0: 1}
    if length > 1:
        clicks[int(rng.integers(1, length))] = 1
    return prompt, clicks


def step_clips(spec: ClipSpec, step: int, length: int) -> list[RenderedClip]:
    """The `spec.batch` clips of one step: video clips of `length` positions and, with spec.image_share, single
    frames. Depends on (seed, step, rank) alone: resumes see new clips, and data-parallel ranks different ones."""
    rng = np.random.default_rng([spec.seed, step] + ([spec.rank] if spec.rank else []))
    clips: list[RenderedClip] = []
    while len(clips) < spec.batch:
        image = spec.image_share > 0 and rng.random() < spec.image_share  # off: the same clips as before
        clip = sample_clip(rng, int(rng.integers(0, 2**32)), 1 if image else length, spec)
        if clip is None:
            continue
        prompt, clicks = clip_recipe(rng, len(clip[2]), image_mix(spec.prompt_mix) if image else spec.prompt_mix)
        clips.append(RenderedClip(clip[0], clip[1], clip[2], prompt, clicks, clip[3]))
    return clips


class ClipPrefetcher:
    """`step_clips` rendered ahead in `workers` processes, handed out in step order (up to 2 x workers steps in
    flight); 0 workers renders inline. Use as a context manager (the processes stop on exit)."""

    def __init__(self, spec: ClipSpec, workers: int):
        self.spec, self.depth = spec, 2 * workers
        self.pool = mp.get_context("spawn").Pool(workers) if workers > 0 else None
        self.pending: deque = deque()  # (step, AsyncResult) in step order

    def get(self, step: int, length_at) -> list[RenderedClip]:
        """The clips of `step`; length_at(s) is the clip length of step s (the curriculum)."""
        if self.pool is None:
            return step_clips(self.spec, step, length_at(step))
        if self.pending and self.pending[0][0] != step:  # not the expected next step (a jump): start over
            self.pending.clear()
        nxt = self.pending[-1][0] + 1 if self.pending else step
        while len(self.pending) < self.depth:
            self.pending.append((nxt, self.pool.apply_async(step_clips, (self.spec, nxt, length_at(nxt)))))
            nxt += 1
        return self.pending.popleft()[1].get()

    def __enter__(self) -> "ClipPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
