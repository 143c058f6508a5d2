"""The streaming tracker: bounded memory, snapshots, batching across streams, policies, input errors."""

import numpy as np
import pytest
import torch

from model import (FrameError, MemoryPolicy, Prompt, PromptError, StateError, StreamingTracker, TrackerState,
                   load_model)
from tests.videos import moving_shapes, shape_masks


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return load_model("synthetic-tiny")


def prompts_for(height: int, width: int) -> list[Prompt]:
    m = shape_masks(height, width, 0)
    ys, xs = np.nonzero(m["square"])
    return [Prompt(1, points=[[0.3 * width, 0.35 * height]], labels=[1]),
            Prompt(2, box=[xs.min(), ys.min(), xs.max(), ys.max()])]


def test_memory_is_bounded_and_snapshots_resume_bit_identically(tiny_model):
    tracker = StreamingTracker(tiny_model)
    frames = moving_shapes(300, 96, 128, seed=2)
    state = tracker.new_stream(96, 128)
    masks, sizes, snapshot = [], {}, None
    for t, frame in enumerate(frames):
        if t == 150:
            snapshot = state.to_bytes()
        result = tracker.step(state, frame, prompts_for(96, 128) if t == 0 else ())
        masks.append(result.masks.clone())
        sizes[t] = state.nbytes
    assert sizes[50] == sizes[299] > 0
    resumed = TrackerState.from_bytes(snapshot)
    assert resumed.frame_index == 150 and resumed.object_ids == [1, 2]
    fresh = StreamingTracker(tiny_model)  # a new tracker, as on another process
    for t in range(150, 300):
        result = fresh.step(resumed, frames[t])
        assert torch.equal(result.masks, masks[t]), f"frame {t} differs after resuming from the snapshot"


def test_step_batch_equals_separate_steps(tiny_model):
    tracker = StreamingTracker(tiny_model)
    sizes = [(96, 128), (128, 96), (80, 80)]
    videos = [moving_shapes(12, h, w, seed=s) for s, (h, w) in enumerate(sizes)]
    # Objects join at different frames so the batch mixes banks of different fill (padding).
    schedule = [{0: prompts_for(*sizes[0])}, {3: prompts_for(*sizes[1])[:1], 6: prompts_for(*sizes[1])[1:]},
                {0: prompts_for(*sizes[2])[1:], 9: [Prompt(7, points=[[40, 40], [10, 10]], labels=[1, 0])]}]
    batched = [tracker.new_stream(h, w) for h, w in sizes]
    single = [tracker.new_stream(h, w) for h, w in sizes]
    for t in range(12):
        prompts = [s.get(t, ()) for s in schedule]
        together = tracker.step_batch(batched, [v[t] for v in videos], prompts)
        for i in range(3):
            alone = tracker.step(single[i], videos[i][t], prompts[i])
            assert together[i].object_ids == alone.object_ids
            assert torch.equal(together[i].masks, alone.masks), f"stream {i} frame {t}"
            torch.testing.assert_close(together[i].logits, alone.logits, atol=1e-3, rtol=0)


def test_memory_policies(tiny_model):
    frames = moving_shapes(20, 96, 128, seed=3)

    def run(policy):
        tracker = StreamingTracker(tiny_model, policy)
        state = tracker.new_stream(96, 128)
        logits = [tracker.step(state, f, prompts_for(96, 128) if t == 0 else ()).logits for t, f in enumerate(frames)]
        return torch.stack(logits), state

    default, state6 = run(MemoryPolicy())
    same, _ = run(MemoryPolicy(num_recent=6, decay=0.0))
    torch.testing.assert_close(default, same, rtol=0, atol=0)
    decayed, _ = run(MemoryPolicy(decay=2.0))
    assert not torch.allclose(default[8:], decayed[8:]), "decay must change attention to older memories"
    one, state1 = run(MemoryPolicy(num_recent=1))
    many, state32 = run(MemoryPolicy(num_recent=32))
    assert state1.nbytes < state6.nbytes < state32.nbytes
    assert not torch.allclose(one[8:], default[8:])
    off, state0 = run(MemoryPolicy(num_recent=0))
    assert state0.nbytes < state1.nbytes and not torch.allclose(off[8:], default[8:])
    for bad in (dict(num_recent=-1), dict(num_recent=33), dict(max_cond=0), dict(decay=-1.0)):
        with pytest.raises(ValueError, match=str(list(bad.values())[0])):
            MemoryPolicy(**bad)


def test_memory_off_sees_only_the_prompted_frame(tiny_model):
    """num_recent=0: a frame's output depends on the prompted frame and itself, never on frames between."""
    frames = moving_shapes(12, 96, 128, seed=5)
    scrambled = frames.copy()
    scrambled[1:10] = frames[1:10][::-1]

    def run(video):
        tracker = StreamingTracker(tiny_model, MemoryPolicy(num_recent=0))
        state = tracker.new_stream(96, 128)
        return [tracker.step(state, f, prompts_for(96, 128) if t == 0 else ()).logits for t, f in enumerate(video)]

    a, b = run(frames), run(scrambled)
    torch.testing.assert_close(a[10], b[10], rtol=0, atol=0)
    assert not torch.equal(a[3], b[3])  # scrambled[3] is frames[7]


def test_objects_join_and_leave(tiny_model):
    tracker = StreamingTracker(tiny_model)
    frames = moving_shapes(6, 64, 64, seed=4)
    state = tracker.new_stream(64, 64)
    assert tracker.step(state, frames[0]).object_ids == []
    assert tracker.step(state, frames[1], [Prompt(5, points=[[20, 20]], labels=[1])]).object_ids == [5]
    assert tracker.step(state, frames[2], [Prompt(9, box=[30, 30, 60, 60])]).object_ids == [5, 9]
    tracker.remove_object(state, 5)
    result = tracker.step(state, frames[3])
    assert result.object_ids == [9] and result[9].mask.shape == (64, 64) and not result[9].is_prompt
    with pytest.raises(StateError, match="object 5"):
        tracker.remove_object(state, 5)


@pytest.mark.parametrize("bad, error, message", [
    (dict(points=[[10, 10], [500, 20]], labels=[1, 1]), PromptError, r"point \[500, 20\] is outside the frame \(width 128, height 96\)"),
    (dict(points=[[10, 10], [20, 20]], labels=[1]), PromptError, r"2 points but labels of shape \(1,\)"),
    (dict(box=[50, 10, 20, 40]), PromptError, r"box \[50, 10, 20, 40\] has x1 < x0"),
    (dict(box=[130, 10, 150, 40]), PromptError, r"box \[130, 10, 150, 40\] is outside the frame \(width 128"),
    (dict(mask=np.zeros((10, 10), bool)), PromptError, r"mask size \[10, 10\] differs from the frame's \[96, 128\]"),
    (dict(points=[[10, 10]], labels=[3]), PromptError, r"labels must be 0 or 1, got \[3\]"),
    (dict(), PromptError, "no points, box or mask"),
])
def test_bad_prompts_fail_and_lose_nothing(tiny_model, bad, error, message):
    tracker = StreamingTracker(tiny_model)
    frames = moving_shapes(3, 96, 128, seed=5)
    state = tracker.new_stream(96, 128)
    tracker.step(state, frames[0], prompts_for(96, 128))
    before = state.to_bytes()
    with pytest.raises(error, match=message) as err:
        tracker.step(state, frames[1], [Prompt(1, **bad)])
    assert err.value.object_id == 1
    assert state.to_bytes() == before and state.frame_index == 1  # nothing changed, the stream goes on
    assert tracker.step(state, frames[1]).object_ids == [1, 2]


def test_a_box_partly_outside_the_frame_tracks_as_the_box_clipped_to_it(tiny_model):
    frames = moving_shapes(3, 96, 128, seed=6)

    def run(box) -> list[torch.Tensor]:
        tracker = StreamingTracker(tiny_model)
        state = tracker.new_stream(96, 128)
        return [tracker.step(state, f, [Prompt(1, box=box)] if t == 0 else ()).masks for t, f in enumerate(frames)]

    for a, b in zip(run([-20, 40, 60, 130]), run([0, 40, 60, 96])):
        assert torch.equal(a, b)


def test_bad_frames_and_states(tiny_model):
    tracker = StreamingTracker(tiny_model)
    state = tracker.new_stream(96, 128)
    with pytest.raises(FrameError, match=r"shape \(96, 128, 3\), got \(128, 96, 3\)"):
        tracker.step(state, np.zeros((128, 96, 3), np.uint8))
    with pytest.raises(FrameError, match="uint8 RGB, got dtype torch.float32"):
        tracker.step(state, np.zeros((96, 128, 3), np.float32))
    with pytest.raises(StateError, match="not a samstream tracker snapshot"):
        TrackerState.from_bytes(b"garbage" * 10)
    with pytest.raises(PromptError, match="correction needs a tracked object"):
        tracker.step(state, np.zeros((96, 128, 3), np.uint8), [Prompt(3, points=[[1, 1]], labels=[1], correction=True)])
    assert state.frame_index == 0


def test_bf16_autocast_on_cpu_is_close_to_float32(tiny_model):
    frames = moving_shapes(4, 96, 128, seed=6)

    def run(dtype):
        tracker = StreamingTracker(tiny_model, autocast_dtype=dtype)
        state = tracker.new_stream(96, 128)
        return torch.stack([tracker.step(state, f, prompts_for(96, 128) if t == 0 else ()).logits
                            for t, f in enumerate(frames)])

    full, half = run(None), run(torch.bfloat16)
    assert not torch.equal(full, half)  # bf16 did run
    agree = ((full > 0) == (half > 0)).float().mean()
    assert agree > 0.97, f"bf16 masks agree with float32 on only {agree:.3f} of pixels"
    with pytest.raises(ValueError, match="int8"):
        StreamingTracker(tiny_model, autocast_dtype=torch.int8)


def test_static_shapes_pad_memory_without_changing_masks(tiny_model):
    frames = moving_shapes(10, 96, 128, seed=7)

    def run(static: bool):
        tracker = StreamingTracker(tiny_model)
        tracker.static_shapes = static
        state = tracker.new_stream(96, 128)
        return [tracker.step(state, f, prompts_for(96, 128) if t == 0 else ()) for t, f in enumerate(frames)]

    for t, (padded, plain) in enumerate(zip(run(True), run(False))):
        assert torch.equal(padded.masks, plain.masks), f"frame {t}"
        torch.testing.assert_close(padded.logits, plain.logits, atol=1e-4, rtol=0)


def test_compiled_step_matches_eager_and_stops_compiling_while_the_memory_fills(tiny_model):
    import torch._dynamo

    torch.manual_seed(0)
    model = load_model("synthetic-tiny")  # compile() changes the model in place: not the shared fixture
    model.load_state_dict(tiny_model.state_dict())
    compiled, eager = StreamingTracker(model), StreamingTracker(tiny_model)
    torch._dynamo.reset()
    compiled.compile(backend="eager")  # dynamo's graph capture and guards; inductor's kernels are benchmarked
    frames = moving_shapes(12, 96, 128, seed=8)
    states = [compiled.new_stream(96, 128), eager.new_stream(96, 128)]
    graphs = []
    for t, f in enumerate(frames):
        prompts = prompts_for(96, 128) if t == 0 else ()
        a, b = compiled.step(states[0], f, prompts), eager.step(states[1], f, prompts)
        assert torch.equal(a.masks, b.masks), f"frame {t}"
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[1] > graphs[0] > 0  # frame 0 compiled the prompted path, frame 1 the tracked one
    # Frame 2 may recompile once (position caches filled on frame 1); frames 2-8 fill the memory (6 recent
    # frames), which must not change a shape: unpadded, every one of them would compile a new graph.
    assert graphs[-1] == graphs[2], f"recompiled as the memory filled: graphs per frame {graphs}"
