"""The memory bank's policies: FIFO storage, which memories a frame attends to, selective storing."""

import numpy as np
import pytest
import torch

from model import MemoryPolicy, StreamingTracker, TrackerState, load_model, resolve_checkpoint
from model.memory_bank import ObjectMemory
from model.memory_view import select_memories
from tests.test_tracker import prompts_for
from tests.videos import moving_shapes


@pytest.fixture(scope="module")
def trained_model():
    """The shipped weights: their presence scores mean something (random weights score every frame alike)."""
    return load_model("synthetic-tiny", resolve_checkpoint("synthetic-tiny", None))


def bank_with(frames: list[int], num_recent: int = 3) -> ObjectMemory:
    bank = ObjectMemory.allocate(1, 0, MemoryPolicy(num_recent=num_recent), 4, (2, 1, 1), 2, torch.device("cpu"))
    for f in frames:
        bank.store_recent(f, torch.full((2, 1, 1), float(f)), torch.full((2,), float(f)))
    return bank


def test_fifo_replaces_the_oldest_frame():
    bank = bank_with([1, 2, 3, 5, 6])
    assert sorted(bank.recent_frames) == [3, 5, 6]
    assert sorted(bank.ptr_frames) == [2, 3, 5, 6]
    slot = bank.recent_frames.index(6)
    assert bank.read("recent", slot).float().unique().tolist() == [6.0]
    bank.store_recent(6, torch.full((2, 1, 1), 9.0), torch.zeros(2))  # a frame stored again keeps its slot
    assert sorted(bank.recent_frames) == [3, 5, 6] and bank.read("recent", slot).float().unique().tolist() == [9.0]


def test_reference_selection_takes_exact_frames_selective_takes_the_newest():
    bank = bank_with([1, 2, 3, 5, 6])  # frame 4 was not remembered
    ref = select_memories(bank, 7).of("recent")
    assert [bank.recent_frames[r.slot] for r in ref] == [6, 5]  # t-1, t-2; t-3 = 4 is missing
    assert [r.age for r in ref] == [r.order for r in ref] == [1, 2]
    view = select_memories(bank, 7, selective=True)
    sel = view.of("recent")
    assert [bank.recent_frames[r.slot] for r in sel] == [6, 5, 3]
    assert [r.age for r in sel] == [1, 2, 4] and [r.order for r in sel] == [1, 2, 3]
    ptrs = view.of("ptrs")
    assert [bank.ptr_frames[r.slot] for r in ptrs] == [6, 5, 3, 2] and [r.age for r in ptrs] == [1, 2, 4, 5]
    assert [r.age for r in select_memories(bank, 6, selective=True).of("recent")] == [1, 3]  # 6 is not its past


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_store_threshold_must_be_a_probability(bad):
    with pytest.raises(ValueError, match="store_threshold"):
        MemoryPolicy(store_threshold=bad)


def video_with_a_gap() -> np.ndarray:
    frames = moving_shapes(24, 96, 128, seed=3)
    frames[8:16] = frames[8:16].mean(axis=(1, 2), keepdims=True).astype(np.uint8)  # the objects vanish for 8 frames
    return frames


def run(model, policy: MemoryPolicy, frames: np.ndarray, snapshot_at: int | None = None):
    tracker = StreamingTracker(model, policy)
    state = tracker.new_stream(96, 128)
    logits, scores, snapshot = [], [], None
    for t, frame in enumerate(frames):
        if t == snapshot_at:
            snapshot = state.to_bytes()
        result = tracker.step(state, frame, prompts_for(96, 128) if t == 0 else ())
        logits.append(result.logits)
        scores.append(result.object_scores)
    return torch.stack(logits), torch.stack(scores), state, snapshot


def test_selective_storing_remembers_only_frames_where_the_object_is_present(trained_model):
    frames, threshold = video_with_a_gap(), 0.5
    logits, scores, state, _ = run(trained_model, MemoryPolicy(store_threshold=threshold), frames)
    assert (scores[8:16] < threshold).all(), "the shipped model must see the objects gone on blank frames"
    for i, bank in enumerate(state.objects.values()):
        present = [t for t in range(1, 24) if scores[t, i] >= threshold]
        assert sorted(f for f in bank.recent_frames if f >= 0) == present[-6:]
    default, _, reference_state, _ = run(trained_model, MemoryPolicy(), frames)
    assert all(sorted(b.recent_frames) == list(range(18, 24)) for b in reference_state.objects.values())
    assert not torch.allclose(logits[16:], default[16:]), "the returning objects must meet other memories"
    every, _, _, _ = run(trained_model, MemoryPolicy(store_threshold=0.0), frames)
    torch.testing.assert_close(every, default, rtol=0, atol=0)  # storing every frame is the reference


def test_selective_snapshot_resumes_bit_identically(trained_model):
    frames, policy = video_with_a_gap(), MemoryPolicy(store_threshold=0.5)
    logits, _, _, snapshot = run(trained_model, policy, frames, snapshot_at=12)
    resumed = TrackerState.from_bytes(snapshot)
    assert resumed.policy == policy
    tracker = StreamingTracker(trained_model, resumed.policy)
    for t in range(12, 24):
        assert torch.equal(tracker.step(resumed, frames[t]).logits, logits[t]), f"frame {t}"


def keyframe_bank(last: int) -> ObjectMemory:
    """Frames 1..last remembered with 2 recent slots and 2 keyframe slots, a keyframe every 4 frames."""
    policy = MemoryPolicy(num_recent=2, num_keyframes=2, keyframe_every=4)
    bank = ObjectMemory.allocate(1, 0, policy, 4, (2, 1, 1), 2, torch.device("cpu"))
    for f in range(1, last + 1):
        bank.store_recent(f, torch.full((2, 1, 1), float(f)), torch.zeros(2))
        if policy.is_keyframe(f - bank.first_frame):
            bank.store_keyframe(f, torch.full((2, 1, 1), float(f)))
    return bank


def test_keyframes_reach_past_the_recent_frames():
    bank = keyframe_bank(10)
    assert sorted(bank.key_frames) == [4, 8] and sorted(bank.recent_frames) == [9, 10]
    view = select_memories(bank, 11)
    keys = view.of("key")
    assert [bank.key_frames[r.slot] for r in keys] == [8, 4] and [r.age for r in keys] == [3, 7]
    assert view.num_spatial == 4 and bank.capacity(MemoryPolicy(num_recent=2, num_keyframes=2))[0] == 4
    bank = keyframe_bank(12)  # keyframe 12 replaced the oldest, 4
    assert sorted(bank.key_frames) == [8, 12]
    early = select_memories(bank, 13)  # keyframe 12 is also t-1: attended once, as a recent frame
    assert [bank.recent_frames[r.slot] for r in early.of("recent")] == [12, 11]
    assert [bank.key_frames[r.slot] for r in early.of("key")] == [8]


@pytest.mark.parametrize("bad", [dict(num_keyframes=33), dict(num_keyframes=-1), dict(keyframe_every=0),
                                 dict(num_recent=0, num_keyframes=2)])
def test_keyframe_settings_are_checked(bad):
    with pytest.raises(ValueError, match=str(list(bad.values())[-1])):
        MemoryPolicy(**bad)


def test_keyframes_change_late_frames_and_survive_a_snapshot(trained_model):
    frames = moving_shapes(24, 96, 128, seed=3)
    policy = MemoryPolicy(num_keyframes=2, keyframe_every=4)
    logits, scores, state, snapshot = run(trained_model, policy, frames, snapshot_at=14)
    default, default_scores, reference_state, _ = run(trained_model, MemoryPolicy(), frames)
    torch.testing.assert_close(logits[:11], default[:11], rtol=0, atol=0)  # keyframe 4 joins at frame 11
    torch.testing.assert_close(scores[:11], default_scores[:11], rtol=0, atol=0)
    # Later frames decode differently: the presence scores show it even where both runs blank an absent mask.
    assert not torch.allclose(scores[11:], default_scores[11:])
    assert all(sorted(b.key_frames) == [16, 20] for b in state.objects.values())
    assert state.nbytes > reference_state.nbytes
    resumed = TrackerState.from_bytes(snapshot)
    assert resumed.policy == policy and all(sorted(b.key_frames) == [8, 12] for b in resumed.objects.values())
    tracker = StreamingTracker(trained_model, policy)
    for t in range(14, 24):
        result = tracker.step(resumed, frames[t])
        assert torch.equal(result.logits, logits[t]) and torch.equal(result.object_scores, scores[t]), f"frame {t}"
