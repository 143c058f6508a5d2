"""One code path: training's clip forward gives the tracker's logits on the same frames, prompts and policy.

model/training/step.py decodes through SAM2Model.decode and stores / lays out memories with memory_write.py
and memory_batch.py, as StreamingTracker does; this pins that nothing drifts between the two (a change to the
memory layout, the decoder call or what is remembered shows up here as a mismatch)."""

import numpy as np
import pytest
import torch

from model import MemoryPolicy, Prompt, StreamingTracker, load_model, resolve_checkpoint
from model.prompts import BOX_TOP_LEFT
from model.synthetic import SyntheticConfig, render_video, split_seed
from model.training.step import clip_forward, gt_prompt

T = 9  # positions: longer than the policies' memories below, so slots are overwritten and keyframes matter

POLICIES = {
    "reference": MemoryPolicy(),
    "two-recent-keyframes": MemoryPolicy(num_recent=2, num_keyframes=2, keyframe_every=3),
    "selective-decay": MemoryPolicy(num_recent=3, store_threshold=0.5, decay=0.1),
    "memory-off": MemoryPolicy(num_recent=0),
}


@pytest.fixture(scope="module")
def model():
    return load_model("synthetic-tiny", resolve_checkpoint("synthetic-tiny", None))  # the shipped weights


@pytest.fixture(scope="module")
def video(model):
    S = model.cfg.image_size  # frames at the model's size: no resize on either side
    for index in range(20):
        v = render_video(split_seed("train", index), SyntheticConfig(height=S, width=S, num_frames=T))
        keep = np.flatnonzero(v.areas[0] >= 64)
        if len(keep) >= 2 and (~v.visible[1:, keep]).any():  # an object hidden on some frame: presence matters
            return v, keep[:3]
    pytest.fail("no train video in the first 20 with 2 objects on frame 0 and a disappearance")


def _tracker_logits(model, video, keep, policy, prompts, cache_memory_kv):
    tracker = StreamingTracker(model, policy, fill_hole_area=0, autocast_dtype=None, cache_memory_kv=cache_memory_kv)
    state = tracker.new_stream(*video.frames.shape[1:3])
    out = []
    for t in range(T):
        result = tracker.step(state, video.frames[t], prompts if t == 0 else ())
        assert result.object_ids == [int(k) + 1 for k in keep]
        out.append(result.logits)
    return torch.stack(out)  # (T, O, S, S)


def _prompts(kind, gt0, keep, generator_seed):
    """The tracker's prompts for the points / box training draws from the clip's generator."""
    if kind == "mask":
        return [Prompt(int(k) + 1, mask=gt0[j].numpy()) for j, k in enumerate(keep)]
    points, labels = gt_prompt(gt0, kind, torch.Generator().manual_seed(generator_seed))
    if kind == "box":
        assert (labels[:, 0] == BOX_TOP_LEFT).all()
        return [Prompt(int(k) + 1, box=points[j].flatten().tolist()) for j, k in enumerate(keep)]
    return [Prompt(int(k) + 1, points=points[j].tolist(), labels=labels[j].tolist()) for j, k in enumerate(keep)]


@pytest.mark.parametrize("cache_memory_kv", [True, False], ids=["kv-cache", "memory-batch"])
@pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
@pytest.mark.parametrize("kind", ["mask", "points", "box"])
def test_training_forward_equals_tracker(model, video, kind, policy, cache_memory_kv):
    if kind != "mask" and cache_memory_kv is False and policy != "reference":
        pytest.skip("one prompt kind per policy suffices without the cache")  # keeps the suite short
    v, keep = video
    gt = torch.from_numpy(v.masks[:, keep])  # (T, O, S, S)
    frames = torch.stack([model.preprocess(f) for f in v.frames])  # (T, 3, S, S), the tracker's preprocessing
    with torch.no_grad():
        outputs = clip_forward(model, frames, gt, list(range(T)), kind, {}, torch.Generator().manual_seed(7),
                               POLICIES[policy])
    trained = torch.stack([model.upsample(o.steps[-1].chosen)[:, 0] for o in outputs])  # (T, O, S, S)
    tracked = _tracker_logits(model, v, keep, POLICIES[policy], _prompts(kind, gt[0], keep, 7), cache_memory_kv)
    # Without the cache it is the same arithmetic, batched alike; the kv cache projects each memory on its own
    # (float rounding only).
    tol = dict(atol=2e-3, rtol=1e-3) if cache_memory_kv else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trained, tracked, **tol)
    assert ((trained > 0) == (tracked > 0)).float().mean() > 0.9999


def test_a_layout_drift_is_caught(model, video, monkeypatch):
    """The test above can fail: a training-side layout whose recent memories are one frame older than the
    tracker's (the off-by-one a re-implementation makes) gives other logits."""
    import dataclasses

    import model.memory_batch as mb

    v, keep = video
    gt = torch.from_numpy(v.masks[:, keep])
    frames = torch.stack([model.preprocess(f) for f in v.frames])
    tracked = _tracker_logits(model, v, keep, MemoryPolicy(), _prompts("mask", gt[0], keep, 7), False)
    real = mb.select_memories

    def one_older(mem, frame, selective=False, retrieved=()):
        view = real(mem, frame, selective, retrieved)
        newest = next((r for r in view.spatial if r.store == "recent"), None)
        return dataclasses.replace(view, spatial=[r for r in view.spatial if r is not newest])

    monkeypatch.setattr(mb, "select_memories", one_older)
    with torch.no_grad():
        outputs = clip_forward(model, frames, gt, list(range(T)), "mask")
    trained = torch.stack([model.upsample(o.steps[-1].chosen)[:, 0] for o in outputs])
    assert (trained - tracked).abs().max() > 0.1
