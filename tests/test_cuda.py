"""What only a real GPU can show: parity with the reference on the device (bf16, as both run there by default),
the compiled hot step against the uncompiled one, a training step, and the worker's pinned non-blocking mask
copies. Each test is marked `cuda` (`pytest -m cuda`) and skipped without CUDA, unless SAMSTREAM_TEST_DEVICE=cpu
(benchmarks/gpu_check.sh --dry-run): then they run on the CPU at tiny sizes, to check the tests themselves.
"""

import copy
import os

import numpy as np
import pytest
import torch

from jobs.benchmark.reference import build_reference, prompt_reference, reference_unavailable
from jobs.benchmark.scene import first_prompts, object_masks, read_jpegs, render_frame, write_jpegs
from model import StreamingTracker, load_model

DRY = os.environ.get("SAMSTREAM_TEST_DEVICE") == "cpu"
DEVICE = torch.device("cpu" if DRY else "cuda")
CUDA = DEVICE.type == "cuda"
# bf16 autocast on CUDA: the default of both systems there; float32 on the CPU dry run.
DTYPE = torch.bfloat16 if CUDA else None
# Sizes: realistic enough on an H200 to take seconds; tiny on the CPU dry run.
PARITY_SIZE, PARITY_FRAMES = (512, 8) if CUDA else (128, 4)
COMPILE_FRAMES = 8 if CUDA else 4  # 8: past the point where the memory banks are full (no new graphs after)
COMPILE_BACKEND = "inductor" if CUDA else "eager"  # inductor takes minutes on 2 CPU cores; eager still traces
TRAIN_SIZE = 128 if CUDA else 64

pytestmark = pytest.mark.skipif(
    not DRY and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); SAMSTREAM_TEST_DEVICE=cpu runs these on the "
           "CPU at tiny sizes")


def clip_iou(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Mask IoU over a clip: intersections and unions summed over its frames (1.0 when both are empty)."""
    inter = sum(int((a & b).sum()) for a, b in zip(ours, ref))
    union = sum(int((a | b).sum()) for a, b in zip(ours, ref))
    return 1.0 if union == 0 else inter / union


def reference_masks(predictor, folder: str, prompts) -> dict[int, list[np.ndarray]]:
    """Object id -> the reference's masks, frame by frame, prompts on frame 0, on DEVICE under DTYPE."""
    autocast = torch.autocast(DEVICE.type, dtype=DTYPE, enabled=DTYPE is not None)
    out: dict[int, list[np.ndarray]] = {}
    with torch.inference_mode(), autocast:
        state = predictor.init_state(folder)
        prompt_reference(predictor, state, 0, prompts)
        for _, ids, logits in predictor.propagate_in_video(state):
            for i, oid in enumerate(ids):
                out.setdefault(oid, []).append((logits[i, 0] > 0).cpu().numpy())
    return out


@pytest.mark.cuda
def test_tracker_matches_the_reference_on_the_device(tmp_path):
    why = reference_unavailable("sam2.1-tiny")
    if why:
        pytest.skip(why)
    predictor = build_reference("sam2.1-tiny", image_size=PARITY_SIZE, device=DEVICE, seed=0)
    with torch.no_grad():  # a fresh reference leaves its position embeddings at zero: give them values
        for name, p in predictor.named_parameters():
            if "pos_embed" in name:
                p.add_(torch.randn_like(p) * 0.02)
        # Random heads often call every object absent (empty masks agree trivially): bias them to present.
        predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
    model = load_model("sam2.1-tiny", image_size=PARITY_SIZE, device=DEVICE)
    model.load_state_dict(predictor.state_dict(), strict=True)
    tracker = StreamingTracker(model, fill_hole_area=0, autocast_dtype=DTYPE)
    paths = write_jpegs(tmp_path, 0, PARITY_FRAMES, PARITY_SIZE, 3)
    prompts = first_prompts(PARITY_SIZE, 3)  # a click, a box, a mask
    ref = reference_masks(predictor, str(tmp_path), prompts)
    state, ours = tracker.new_stream(PARITY_SIZE, PARITY_SIZE), {}
    for t, frame in enumerate(read_jpegs(paths)):
        result = tracker.step(state, frame, prompts if t == 0 else ())
        assert result.masks.device.type == DEVICE.type
        for oid in result.object_ids:
            ours.setdefault(oid, []).append(result[oid].mask.cpu().numpy())
    assert sorted(ours) == sorted(ref) == [1, 2, 3]
    for oid in ref:
        assert len(ours[oid]) == len(ref[oid]) == PARITY_FRAMES
        areas = [m.mean() for m in ours[oid]]
        assert min(areas) > 0.001 and max(areas) < 0.999, f"object {oid}: degenerate masks {areas}"
        iou = clip_iou(ours[oid], ref[oid])
        worst = min(clip_iou([a], [b]) for a, b in zip(ours[oid], ref[oid]))
        assert iou >= 0.99, f"object {oid}: clip mask IoU {iou:.4f} with the reference (worst frame {worst:.4f})"


def _run_batch(tracker: StreamingTracker, frames: int) -> list[list]:
    """Two streams stepped together (different phases of the scene, two objects prompted on frame 0 of
    each) -> per frame, the two FrameResults with their tensors on the host."""
    size = tracker.cfg.image_size
    states = [tracker.new_stream(size, size) for _ in range(2)]
    prompts = first_prompts(size, 2)
    out = []
    for t in range(frames):
        batch = [render_frame(t, size, 2), render_frame(t + 40, size, 2)]
        results = tracker.step_batch(states, batch, [prompts if t == 0 else ()] * 2)
        assert all(r.masks.device.type == DEVICE.type for r in results)
        out.append([(r.object_ids, r.masks.cpu(), r.ious.float().cpu(), r.object_scores.float().cpu())
                    for r in results])
    return out


@pytest.mark.cuda
def test_compiled_step_batch_equals_the_uncompiled():
    torch.manual_seed(0)
    model = load_model("synthetic-tiny", device=DEVICE)  # random weights: the arithmetic is what is compared
    eager = StreamingTracker(model, fill_hole_area=0, autocast_dtype=DTYPE)
    compiled = StreamingTracker(copy.deepcopy(model), fill_hole_area=0, autocast_dtype=DTYPE)
    compiled.compile(backend=COMPILE_BACKEND)  # in place, so on a copy of the modules
    want, got = _run_batch(eager, COMPILE_FRAMES), _run_batch(compiled, COMPILE_FRAMES)
    # bf16: the compiled kernels round differently; float32 (CPU, eager backend): the same arithmetic.
    tol = 0.02 if CUDA else 1e-4
    for stream in range(2):
        ids = want[0][stream][0]
        assert all(f[stream][0] == ids for f in want + got) and ids == [1, 2]
        for k in range(len(ids)):
            iou = clip_iou([f[stream][1][k].numpy() for f in got], [f[stream][1][k].numpy() for f in want])
            assert iou >= (0.99 if CUDA else 0.9999), f"stream {stream} object {ids[k]}: clip IoU {iou:.4f}"
        for a, b in zip(got, want):
            torch.testing.assert_close(a[stream][2], b[stream][2], atol=tol, rtol=0)  # predicted IoUs
            torch.testing.assert_close(a[stream][3], b[stream][3], atol=tol, rtol=0)  # object scores
    assert compiled.static_shapes and not eager.static_shapes


def _train_clip(model, objects: int, start: int, prompt: str, seed: int):
    from model.training.step import TrainClip

    size = model.cfg.image_size
    ts = [start, start + 1, start + 3]  # a dropped frame: irregular memory ages, as training makes them
    frames = torch.from_numpy(np.stack([render_frame(t, size, objects) for t in ts])).to(DEVICE)
    x = (frames.permute(0, 3, 1, 2).float() / 255.0 - model.pixel_mean) / model.pixel_std
    gt = torch.from_numpy(np.stack([object_masks(t, size, objects) for t in ts])).to(DEVICE)
    return TrainClip(x, gt, ts, prompt, {2: 1}, torch.Generator().manual_seed(seed))  # a click on position 2


@pytest.mark.cuda
def test_a_training_step_on_the_device():
    from model.training.step import clip_loss, clips_forward

    torch.manual_seed(0)
    model = load_model("synthetic-tiny", image_size=TRAIN_SIZE, device=DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clips = [_train_clip(model, 2, 0, "mask", 1), _train_clip(model, 3, 30, "box", 2)]
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=CUDA):  # as jobs/train.py runs on CUDA
        outputs = clips_forward(model, clips)
    loss = sum(clip_loss(out, c.gt_masks)[0] for out, c in zip(outputs, clips))
    assert loss.device.type == DEVICE.type and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    named = dict(model.named_parameters())
    grads = {n: p.grad for n, p in named.items() if p.grad is not None}
    assert len(grads) > 0.8 * len(named), f"only {len(grads)} of {len(named)} parameters got a gradient"
    assert all(g.device.type == DEVICE.type and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    before = {n: p.detach().clone() for n, p in named.items()}
    opt.step()
    moved = [n for n, p in named.items() if not torch.equal(p, before[n])]
    assert len(moved) >= len(grads) * 0.8 and all(torch.isfinite(p).all() for p in named.values())


@pytest.mark.cuda
def test_the_workers_mask_copy_is_pinned_and_non_blocking():
    """_to_host on a device tensor: a pinned host tensor that holds the values once the copy is waited for."""
    pytest.importorskip("av", reason="workers.stream_worker imports PyAV (carry its wheel: benchmarks/gpu_wheels.sh)")
    pytest.importorskip("pycocotools", reason="workers.stream_worker imports pycocotools (carry its wheel)")
    from workers.stream_worker import _to_host

    x = torch.rand(3, 257, 131, device=DEVICE) > 0.5  # odd sizes: no alignment luck
    host = _to_host(x)
    if CUDA:
        assert host.device.type == "cpu" and host.is_pinned()
        torch.cuda.current_stream().synchronize()
    else:
        assert host is x  # CPU tensors are returned as they are
    assert torch.equal(host, x.cpu())


@pytest.mark.cuda
def test_stream_worker_writes_what_the_tracker_computed_through_the_pinned_copies(tmp_path, monkeypatch):
    """StreamWorker without Ray on DEVICE over a JPEG frame folder: every frame's masks go through _start_copy
    (pinned host buffers and a CUDA event on CUDA) and the part file holds exactly the tracker's results."""
    pytest.importorskip("av", reason="workers.stream_worker imports PyAV (carry its wheel: benchmarks/gpu_wheels.sh)")
    pytest.importorskip("pycocotools", reason="workers.stream_worker imports pycocotools (carry its wheel)")
    from model import Prompt, embedded_checkpoint
    from workers.masklets import ChunkRows
    from workers.output import read_masklets
    from workers.stream_worker import StreamWorker
    from workers.tasks import ChunkTask, ModelSpec
    from workers.video_source import probe_video

    seen, start_copy = [], StreamWorker._start_copy

    def recording(r, frame, res):
        pending = start_copy(r, frame, res)
        seen.append((frame, list(res.object_ids), res.masks.cpu(), res.ious.float().cpu(),
                     res.object_scores.float().cpu(), list(res.is_prompt), pending))
        return pending

    monkeypatch.setattr(StreamWorker, "_start_copy", staticmethod(recording))
    write_jpegs(tmp_path / "frames", 0, 5, 96, 2)
    info = probe_video(str(tmp_path / "frames"))
    worker = StreamWorker(ModelSpec("synthetic-tiny", embedded_checkpoint("synthetic-tiny")), str(tmp_path / "out"),
                          device=DEVICE.type)
    prompts = tuple((0, p) for p in first_prompts(96, 2)) + ((2, Prompt(3, box=[10.0, 10.0, 40.0, 40.0])),)
    (report,) = worker.run([ChunkTask("v", 0, 0, 0, 5, info, prompts)])
    assert report.ok, report.error
    assert [s[0] for s in seen] == list(range(5)) and [len(s[1]) for s in seen] == [2, 2, 3, 3, 3]
    for *_, pending in seen:  # what travels to the host (masks or their encoding, scores), whatever its fields
        tensors = [v for v in vars(pending).values() if isinstance(v, torch.Tensor)]
        assert len(tensors) >= 3 and all(t.device.type == "cpu" for t in tensors)
        if CUDA:  # the copies were started without waiting: pinned buffers, an event to wait on
            assert all(t.is_pinned() for t in tensors)
            assert isinstance(pending.copied, torch.cuda.Event) and pending.copied.query()
        else:
            assert pending.copied is None
    expected, times = ChunkRows("v"), info.frame_times(0, 5)
    for frame, ids, masks, ious, scores, is_prompt, _ in seen:
        expected.add(frame, float(times[frame]), ids, masks.numpy(), ious.numpy(), scores.numpy(), is_prompt)
    want = expected.to_table()
    assert read_masklets(str(tmp_path / "out")).equals(want)
    assert sum(a > 0 for a in want["area"].to_pylist()) > 0  # real masks, not only empty ones
