"""Cached memory keys and values (model/memory_kv.py) give what projecting every memory on every frame gives."""

import pytest
import torch

from model import MemoryPolicy, Prompt, StreamingTracker, load_model
from model.memory_kv import MemoryKVBuffer
from tests.videos import moving_shapes

H, W = 96, 128
POLICIES = {
    "default": MemoryPolicy(),
    "one-recent": MemoryPolicy(num_recent=1),
    "memory-off": MemoryPolicy(num_recent=0),
    "decay": MemoryPolicy(decay=0.5),
    "two-prompted-slots": MemoryPolicy(max_cond=2),  # re-prompts overwrite prompted slots
    "keyframes": MemoryPolicy(num_recent=2, num_keyframes=2, keyframe_every=3),  # keyframes past the recent ones
    "selective": MemoryPolicy(store_threshold=0.5),
}
# Stream 0: two objects from frame 0, object 1 re-prompted on 5 and 9; stream 1: object 3 joins on frame 4.
SCHEDULE = [{0: [Prompt(1, points=[[40, 30]], labels=[1]), Prompt(2, box=[60, 40, 100, 80])],
             5: [Prompt(1, points=[[44, 34]], labels=[1])], 9: [Prompt(1, box=[30, 20, 60, 50])]},
            {4: [Prompt(3, points=[[70, 50]], labels=[1])]}]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return load_model("synthetic-tiny")


def run(model, policy, cache: bool, frames_per_stream, autocast_dtype=None):
    tracker = StreamingTracker(model, policy, autocast_dtype=autocast_dtype, cache_memory_kv=cache)
    states = [tracker.new_stream(H, W) for _ in frames_per_stream]
    out = []
    for t in range(len(frames_per_stream[0])):
        out.append(tracker.step_batch(states, [f[t] for f in frames_per_stream], [s.get(t, ()) for s in SCHEDULE]))
    return out, states


@pytest.mark.parametrize("name", list(POLICIES))
def test_cached_keys_and_values_give_the_same_masks(tiny_model, name):
    policy = POLICIES[name]
    videos = [moving_shapes(14, H, W, seed=s) for s in (11, 12)]
    cached, states = run(tiny_model, policy, True, videos)
    plain, _ = run(tiny_model, policy, False, videos)
    for t, (a_frame, b_frame) in enumerate(zip(cached, plain)):
        for i, (a, b) in enumerate(zip(a_frame, b_frame)):
            assert torch.equal(a.masks, b.masks), f"{name}: stream {i} frame {t}"
            torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=0)
    for state in states:  # at most one entry per live slot: overwritten slots do not pile up
        for bank in state.objects.values():
            live = sum(f >= 0 for f in bank.cond_frames + bank.recent_frames + bank.key_frames)
            assert 0 < len(bank.kv_cache) <= live


def test_cached_keys_under_bf16_stay_close(tiny_model):
    videos = [moving_shapes(10, H, W, seed=s) for s in (13, 14)]
    cached, _ = run(tiny_model, MemoryPolicy(), True, videos, torch.bfloat16)
    plain, _ = run(tiny_model, MemoryPolicy(), False, videos, torch.bfloat16)
    a = torch.cat([r.logits for frame in cached for r in frame])
    b = torch.cat([r.logits for frame in plain for r in frame])
    agree = ((a > 0) == (b > 0)).float().mean()
    assert agree > 0.99, f"cached bf16 masks agree with uncached on only {agree:.4f} of pixels"


def test_new_weights_are_not_served_from_a_stale_cache(tiny_model):
    """The temporal key table is kept between frames; loading other weights in place must renew it."""
    torch.manual_seed(0)
    model = load_model("synthetic-tiny")
    model.load_state_dict(tiny_model.state_dict())
    videos = [moving_shapes(6, H, W, seed=s) for s in (15, 16)]
    tracker = StreamingTracker(model, cache_memory_kv=True)
    states = [tracker.new_stream(H, W) for _ in videos]
    for t in range(6):
        tracker.step_batch(states, [v[t] for v in videos], [s.get(t, ()) for s in SCHEDULE])
    other = {k: v + 0.05 * torch.randn_like(v) if k.startswith(("maskmem_tpos_enc", "memory_attention")) else v
             for k, v in tiny_model.state_dict().items()}
    model.load_state_dict(other)
    states = [tracker.new_stream(H, W) for _ in videos]
    plain, _ = run(model, MemoryPolicy(), False, videos)
    for t in range(6):
        res = tracker.step_batch(states, [v[t] for v in videos], [s.get(t, ()) for s in SCHEDULE])
        for a, b in zip(res, plain[t]):
            torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=0)


def test_buffer_grows_to_the_largest_batch_and_is_reused():
    buf = MemoryKVBuffer()
    k, v = buf.take((2, 3, 1, 40, 8), torch.float32, torch.device("cpu"))
    assert k.shape == v.shape == (2, 3, 1, 40, 8) and k.data_ptr() != v.data_ptr()
    k.fill_(1.0), v.fill_(2.0)
    assert (k == 1).all() and (v == 2).all()  # keys and values do not overlap
    k2, _ = buf.take((2, 3, 1, 30, 8), torch.float32, torch.device("cpu"))  # smaller: the same room
    assert k2.data_ptr() == k.data_ptr()
    k3, v3 = buf.take((2, 3, 1, 50, 8), torch.float32, torch.device("cpu"))  # larger: a new, larger room
    assert k3.numel() == v3.numel() == 2 * 3 * 50 * 8
    k4, _ = buf.take((2, 3, 1, 50, 8), torch.bfloat16, torch.device("cpu"))
    assert k4.dtype == torch.bfloat16


def test_a_full_memory_reuses_one_buffer_on_every_frame(tiny_model):
    """Once every bank is full (7 frames, 16 pointers) no frame maps a new batch (tens of MB at 512 px)."""
    video = moving_shapes(24, H, W, seed=17)
    tracker = StreamingTracker(tiny_model, cache_memory_kv=True)
    state = tracker.new_stream(H, W)
    rooms = []
    for t in range(24):
        tracker.step(state, video[t], SCHEDULE[0][0] if t == 0 else ())
        if t > 0:  # the prompted frame attends to no memory
            rooms.append(tracker._kv_buffer._room.data_ptr())
    assert len(set(rooms[16:])) == 1, rooms
    assert len(set(rooms)) < 10, rooms  # grown a few times while the banks filled, not on every frame


def test_segment_job_can_switch_the_cache_off():
    from jobs.segment import config_from_args
    from jobs.segment import parse_args

    base = ["--manifest", "videos.jsonl", "--out", "out"]
    assert config_from_args(parse_args(base), {}).model.memory_kv_cache
    assert not config_from_args(parse_args(base + ["--no-memory-kv-cache"]), {}).model.memory_kv_cache
