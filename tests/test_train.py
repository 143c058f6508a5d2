"""Training: clip_forward's graph reaches the memory pathway, a few steps fit a fixed clip, and
jobs.train resumes from its checkpoint (tiny: image size 64, 2-frame clips)."""

import json

import numpy as np
import pytest
import torch

from jobs import train as train_job
from model import SAM2Model, get_config, load_model
from model.training.step import TrainClip, clip_forward, clip_loss, clips_forward, sample_clicks
from model.synthetic import SyntheticConfig, render_video, split_seed
from model.training.clips import ClipPrefetcher, image_mix, step_clips

S = 64


@pytest.fixture(scope="module")
def clip():
    video = render_video(split_seed("train", 3), SyntheticConfig(height=S, width=S, num_frames=4))
    keep = np.flatnonzero(video.areas[0] >= 16)[:2]
    x = torch.from_numpy(video.frames[[0, 2]]).permute(0, 3, 1, 2).float() / 255.0
    model = SAM2Model(get_config("synthetic-tiny", S))
    frames = (x - model.pixel_mean) / model.pixel_std  # (2, 3, S, S)
    return frames, torch.from_numpy(video.masks[[0, 2]][:, keep]), [0, 2]  # a dropped frame in between


def _model(seed=0):
    torch.manual_seed(seed)
    model = SAM2Model(get_config("synthetic-tiny", S)).train()
    train_job.set_dropout(model, 0.0)  # no dropout: the loss must be a function of the weights alone
    return model


def test_gradients_reach_memory_modules(clip):
    frames, gt, index = clip
    model = _model()
    outputs = clip_forward(model, frames, gt, index, "points", {0: 1, 1: 1}, torch.Generator().manual_seed(0))
    assert [len(o.steps) for o in outputs] == [2, 2]
    # synthetic-tiny tracks with one mask (multimask_for_tracking=False); official presets with 3 candidates
    assert outputs[1].steps[0].logits.shape == (gt.shape[1], 1, S // 4, S // 4)
    # Only the memory-conditioned frame's loss: its gradient can reach the memory pathway only through memory.
    loss, _ = clip_loss(outputs[1:], gt)
    loss.backward()
    for prefix in ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, prefix


def _train_clip(model, seed: int, index: list[int], prompt: str, clicks: dict[int, int]) -> TrainClip:
    video = render_video(split_seed("train", seed), SyntheticConfig(height=S, width=S, num_frames=max(index) + 1))
    keep = np.flatnonzero(video.areas[index[0]] >= 16)[:3]
    x = torch.from_numpy(video.frames[index]).permute(0, 3, 1, 2).float() / 255.0
    return TrainClip((x - model.pixel_mean) / model.pixel_std, torch.from_numpy(video.masks[index][:, keep]),
                     index, prompt, clicks, torch.Generator().manual_seed(seed))


# Every prompt kind, corrective clicks on different positions (two on one), and frame gaps that give the clips
# different numbers of memories at the same position (padded in the batch).
CLIPS = [(3, [0, 1, 2, 3, 4, 5, 6, 7], "mask", {3: 1}), (4, [0, 2, 5, 6, 7, 11, 12, 18], "points", {0: 1, 5: 2}),
         (5, [1, 2, 3, 4, 5, 6, 7, 8], "box", {0: 1, 2: 1}), (6, [0, 3, 4, 5, 9, 10, 11, 12], "box", {})]


def test_clips_batched_equal_one_at_a_time():
    model = _model(2)
    batched = clips_forward(model, [_train_clip(model, *c) for c in CLIPS])
    for spec, outputs in zip(CLIPS, batched):
        alone = clips_forward(model, [_train_clip(model, *spec)])[0]
        assert [len(o.steps) for o in outputs] == [len(o.steps) for o in alone]
        corrected = sum(spec[3].values()) - (spec[2] == "mask") * spec[3].get(0, 0)  # a mask prompt is never
        assert sum(len(o.steps) for o in alone) == len(alone) + corrected
        for a, b in zip(alone, outputs):
            for x, y in zip(a.steps, b.steps):
                torch.testing.assert_close(y.logits, x.logits, atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(y.object_score_logits, x.object_score_logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="clips of 8 positions"):
        clips_forward(model, [_train_clip(model, *CLIPS[0]), _train_clip(model, 7, [0, 1], "mask", {})])


def test_clicks_come_from_the_error_region():
    gt = torch.zeros(2, 16, 16, dtype=torch.bool)
    gt[0, 4:8, 4:8] = True  # object 0 missed entirely: a positive click inside it
    pred = torch.zeros_like(gt)
    pred[1, 0:2, 0:2] = True  # object 1 a false alarm: a negative click on it
    points, labels = sample_clicks(pred, gt, torch.Generator().manual_seed(0))
    (x0, y0), (x1, y1) = points[0, 0].tolist(), points[1, 0].tolist()
    assert labels[:, 0].tolist() == [1, 0]
    assert gt[0, int(y0), int(x0)] and pred[1, int(y1), int(x1)]


def test_a_few_steps_fit_a_fixed_clip(clip):
    frames, gt, index = clip
    model = _model(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        outputs = clip_forward(model, frames, gt, index, "mask", {1: 1}, torch.Generator().manual_seed(0))
        loss, _ = clip_loss(outputs, gt)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def test_train_job_resumes(tmp_path):
    common = ["--out", str(tmp_path), "--batch", "1", "--image-size", str(S), "--curriculum", "0:2,2:3",
              "--val-videos", "1", "--val-frames", "3", "--log-every", "1", "--device", "cpu"]
    assert train_job.main([*common, "--steps", "2"]) == 0
    assert train_job.main([*common, "--steps", "3", "--resume"]) == 0
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["clip_length"] for r in rows if "loss" in r] == [2, 2, 3]  # the curriculum goes on after resume
    assert any("val_JF" in r for r in rows)
    model = load_model("synthetic-tiny", checkpoint=str(tmp_path / "model.safetensors"), image_size=S)
    assert sum(p.numel() for p in model.parameters()) > 1e6
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_job_data_parallel(tmp_path):
    """Two gloo ranks on this machine: rank 0 logs and saves; the weights moved from their initial values."""
    args = ["--out", str(tmp_path), "--batch", "1", "--image-size", str(S), "--curriculum", "0:2",
            "--val-videos", "1", "--val-frames", "2", "--log-every", "1", "--device", "cpu", "--workers", "2",
            "--steps", "2"]
    assert train_job.main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and all(r["workers"] == 2 for r in rows if "loss" in r)
    torch.manual_seed(0)
    initial = load_model("synthetic-tiny", image_size=S).state_dict()
    trained = load_model("synthetic-tiny", checkpoint=str(tmp_path / "model.safetensors"), image_size=S).state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)


def test_training_after_inference_reuses_caches(clip):
    """Position caches filled under inference_mode (the tracker's validation) must serve training after it."""
    frames, gt, index = clip
    model = load_model("synthetic-tiny", image_size=S)
    with torch.inference_mode():
        clip_forward(model, frames, gt, index)
    model.train()
    loss, _ = clip_loss(clip_forward(model, frames, gt, index), gt)
    loss.backward()
    assert model.memory_attention.layers[0].cross_attn_image.q_proj.weight.grad is not None


def test_train_job_starts_from_given_weights(tmp_path):
    common = ["--batch", "1", "--image-size", str(S), "--curriculum", "0:2", "--val-videos", "1",
              "--val-frames", "2", "--log-every", "1", "--device", "cpu"]
    assert train_job.main([*common, "--out", str(tmp_path / "a"), "--steps", "1"]) == 0
    weights = str(tmp_path / "a" / "model.safetensors")
    assert train_job.main([*common, "--out", str(tmp_path / "b"), "--steps", "6", "--init", weights,
                           "--start-step", "5"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [6]
    first = load_model("synthetic-tiny", checkpoint=weights, image_size=S).state_dict()
    second = load_model("synthetic-tiny", checkpoint=str(tmp_path / "b" / "model.safetensors"), image_size=S)
    torch.manual_seed(1)
    other = load_model("synthetic-tiny", image_size=S).state_dict()
    moved = sum(float((v.float() - first[k].float()).norm()) for k, v in second.state_dict().items())
    assert 0 < moved < sum(float((v.float() - first[k].float()).norm()) for k, v in other.items()) / 10


def test_local_attention_init_carries_each_objects_mask_through_memory(clip):
    """At random init memory attention averages memory uniformly, so two objects' fused features barely differ;
    the locality prior (equal query/key biases under RoPE) makes each position read its own memory position."""
    frames, gt, _ = clip

    def object_spread(model) -> float:
        with torch.no_grad():
            feats = model.encode_frames(frames[:2])
            O = gt.shape[1]
            f0, f1 = feats.select(torch.zeros(O, dtype=torch.long)), feats.select(torch.ones(O, dtype=torch.long))
            d = model.decode_mask_prompt(f0.feat, f0.high_res, gt[0][:, None].float())
            mem = model.encode_memory(f0.feat, model.upsample(d.low_res), d.object_score_logits,
                                      torch.ones(O, dtype=torch.bool))
            memory = mem.flatten(2).transpose(1, 2)  # (O, hw, Cm)
            pos = model.memory_pos(memory.device)[None].expand(O, -1, -1)
            fused = model.fuse_with_memory(f1.feat, f1.pos, memory, pos, 0, None)
            return float((fused[0] - fused[1]).abs().mean() / fused.std())

    torch.manual_seed(0)
    plain = load_model("synthetic-tiny", image_size=S)
    torch.manual_seed(0)
    local = load_model("synthetic-tiny", image_size=S)
    train_job.local_attention_init(local, 3.0)
    assert object_spread(local) > 1.5 * object_spread(plain)  # about 2x at init; training widens it fast


def test_temporal_weight_adds_the_weighted_temporal_term(tmp_path):
    def first_step(weight: float) -> dict:
        out = tmp_path / f"w{weight}"
        assert train_job.main(["--out", str(out), "--batch", "1", "--image-size", str(S), "--curriculum", "0:3",
                               "--steps", "1", "--val-videos", "1", "--val-frames", "2", "--device", "cpu",
                               "--temporal-weight", str(weight)]) == 0
        return next(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line)

    plain, weighted = first_step(0.0), first_step(5.0)
    assert plain["temporal"] > 0  # the clip's masks move, so an untrained model's predictions change too
    assert weighted["loss"] == pytest.approx(plain["loss"] + 5.0 * plain["temporal"], rel=1e-4)


@pytest.mark.parametrize("flag", ["--eval-every", "--save-every", "--steps", "--workers"])
def test_bad_counts_are_refused_naming_the_value(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        train_job.main(["--out", str(tmp_path), flag, "0"])
    assert exit_info.value.code == 2 and f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_image_clips_are_single_frames_prompted_without_masks():
    assert image_mix({"mask": 0.5, "points": 0.25, "box": 0.25}) == {"points": 0.5, "box": 0.5}
    assert image_mix({"mask": 1.0}) == {"box": 1.0}
    args = train_job.parse_args(["--out", "x", "--batch", "2", "--image-size", str(S), "--curriculum", "0:3",
                                 "--image-share", "1", "--prompt-mix", "mask:1", "--device", "cpu"])
    model = _model()
    opt = train_job.make_optimizer(model, args)
    record = train_job.train_step(model, opt, args, 0, torch.device("cpu"))
    assert np.isfinite(record["loss"]) and record["loss"] > 0  # boxes, not masks: the decoder had to predict
    # One frame attends to no memory: memory attention gets no gradient, the decoder does.
    assert all(p.grad is None or not p.grad.any() for n, p in model.named_parameters()
               if n.startswith("memory_attention."))
    assert any(p.grad is not None and p.grad.any() for n, p in model.named_parameters()
               if n.startswith("sam_mask_decoder."))


def test_image_share_outside_0_1_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_job.parse_args(["--out", "x", "--image-share", "1.5"])
    assert "--image-share must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_clips_rendered_ahead_are_the_clips_rendered_inline():
    spec = train_job.clip_spec(train_job.parse_args(["--out", "x", "--batch", "3", "--image-share", "0.3"]), S)
    length_at = {0: 2, 1: 2, 2: 3, 3: 3, 4: 3, 5: 3, 6: 3, 7: 3, 8: 3, 9: 3}.get  # a curriculum change at step 2
    with ClipPrefetcher(spec, 2) as ahead:
        for step in (0, 1, 2, 7):  # 7: a jump (as after a resume) starts the queue over
            got, want = ahead.get(step, length_at), step_clips(spec, step, length_at(step))
            assert [len(c.frame_index) for c in got] == [len(c.frame_index) for c in want]
            for a, b in zip(got, want):
                assert a.frame_index == b.frame_index and a.prompt == b.prompt and a.clicks == b.clicks
                assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)


def test_train_job_with_data_workers_logs_the_same_losses(tmp_path):
    common = ["--batch", "2", "--image-size", str(S), "--curriculum", "0:2,1:3", "--val-videos", "1",
              "--val-frames", "2", "--log-every", "1", "--eval-every", "100", "--device", "cpu", "--steps", "2"]
    assert train_job.main([*common, "--out", str(tmp_path / "inline")]) == 0
    assert train_job.main([*common, "--out", str(tmp_path / "ahead"), "--data-workers", "1"]) == 0
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "log.jsonl").read_text().splitlines())
               if "loss" in r] for d in ("inline", "ahead")]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    with pytest.raises(SystemExit):
        train_job.parse_args(["--out", "x", "--data-workers", "-1"])


def test_train_job_stops_at_max_minutes_with_a_checkpoint(tmp_path, capsys):
    common = ["--out", str(tmp_path), "--batch", "1", "--image-size", str(S), "--curriculum", "0:2",
              "--val-videos", "1", "--val-frames", "2", "--log-every", "1", "--eval-every", "100", "--device", "cpu",
              "--steps", "4"]
    assert train_job.main([*common, "--max-minutes", "1e-4"]) == 0  # spent by the end of the first step
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 1
    assert "--max-minutes 0.0001 spent at step 1 of 4" in capsys.readouterr().out
    assert train_job.main([*common, "--resume"]) == 0
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 4
    with pytest.raises(SystemExit):
        train_job.parse_args(["--out", "x", "--max-minutes", "0"])


def test_multimask_single_click_trains_three_candidates(clip):
    """--multimask: a single click gets 3 candidates (min-over-3 loss), the tracked frames one."""
    from dataclasses import replace

    frames, gt, index = clip
    model = _model()
    model.cfg = replace(model.cfg, multimask_max_pt_num=1)
    outputs = clip_forward(model, frames, gt, index, "points", {0: 1}, torch.Generator().manual_seed(0))
    first, click = outputs[0].steps
    assert first.logits.shape[1] == 3 and first.ious.shape == (gt.shape[1], 3)
    assert click.logits.shape[1] == 1  # two points: one mask, as SAM 2
    loss, _ = clip_loss(outputs, gt)
    loss.backward()
    assert torch.isfinite(loss)


def test_policy_mix_and_model_overrides_are_checked():
    from model.training.config import model_config, parse_overrides
    from model.training.policies import parse_policy_mix, sample_policies

    mix = parse_policy_mix("reference:1,selective-keyframes:1")
    drawn = sample_policies(mix, 64, [0, 5])
    assert drawn == sample_policies(mix, 64, [0, 5]) and {p.store_threshold for p in drawn} == {None, 0.5}
    with pytest.raises(ValueError, match="'recency'"):
        parse_policy_mix("recency:1")
    cfg = model_config(get_config("synthetic-tiny"), parse_overrides("d_model=192,trunk.stages=1-2-3-1"))
    assert cfg.d_model == 192 and cfg.trunk.stages == (1, 2, 3, 1)
    with pytest.raises(ValueError, match="'widht'"):
        model_config(get_config("synthetic-tiny"), parse_overrides("widht=3"))
    with pytest.raises(SystemExit):
        train_job.parse_args(["--out", "x", "--policy-mix", "nope:1"])


def test_a_grown_memory_attention_starts_as_the_trained_one():
    """--grow: a third memory-attention layer starts as the identity, so the grown model's memory-conditioned
    features equal the 2-layer model's; a wider model cannot grow from it and the error names tensors."""
    from model.training.config import model_config, parse_overrides
    from model.training.grow import GrowError, grow_from

    small = _model(3).eval()
    torch.manual_seed(4)
    big = SAM2Model(model_config(get_config("synthetic-tiny", S), parse_overrides("memory_attention_layers=3"))).eval()
    added = grow_from(big, small.state_dict())
    assert added and all(k.startswith("memory_attention.layers.2.") for k in added)
    g = torch.Generator().manual_seed(0)
    curr, pos = torch.randn(2, 16, 128, generator=g), torch.randn(2, 16, 128, generator=g)
    mem, mem_pos = torch.randn(2, 40, 32, generator=g), torch.randn(2, 40, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(big.memory_attention(curr, pos, mem, mem_pos, 8),
                                   small.memory_attention(curr, pos, mem, mem_pos, 8))
        assert big.memory_attention.layers[2].linear1.weight.abs().sum() > 0  # only the residual outputs are zero
    wide = SAM2Model(model_config(get_config("synthetic-tiny", S), parse_overrides("d_model=96")))
    with pytest.raises(GrowError, match="of another shape") as e:
        grow_from(wide, small.state_dict())
    assert any("memory_attention" in n for n in e.value.names)


def test_families_narrow_the_training_clips(capsys):
    args = train_job.parse_args(["--out", "x", "--families", "shape:ellipse,texture:flat", "--batch", "3"])
    clips = step_clips(train_job.clip_spec(args, S), 0, 2)
    assert all({"shape:ellipse", "texture:flat"} <= c.families for c in clips)
    assert all(not any(f.startswith("shape:") and f != "shape:ellipse" for f in c.families) for c in clips)
    for bad in ("shape:glyph", "shape:nope"):  # a held-out family, an unknown one
        with pytest.raises(SystemExit):
            train_job.parse_args(["--out", "x", "--families", bad])
        assert "--families" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_job.parse_args(["--out", "x", "--grow"])


def test_an_ablation_checkpoint_rebuilds_as_trained(tmp_path):
    """benchmarks.ablations scores a run with the config it was trained as (image size and --model overrides
    from the checkpoint's metadata), not the preset's."""
    from benchmarks.ablations import load_run

    out = tmp_path / "run"
    assert train_job.main(["--out", str(out), "--steps", "1", "--batch", "1", "--image-size", str(S), "--curriculum",
                           "0:2", "--val-videos", "1", "--val-frames", "2", "--device", "cpu",
                           "--model", "memory_attention_layers=3"]) == 0
    model, meta = load_run(out / "model.safetensors")
    assert model.cfg.image_size == S and model.cfg.memory_attention_layers == 3 and meta["step"] == "1"


def test_iou_calibration_figures():
    from benchmarks.frame_prompts import calibration

    c = calibration(np.array([0.1, 0.3, 0.8, 0.95]), np.array([0.0, 0.5, 0.6, 1.0]))
    assert c["mae"] == pytest.approx((0.1 + 0.2 + 0.2 + 0.05) / 4)
    assert [b["n"] for b in c["bins"]] == [1, 1, 1, 1] and c["bins"][2]["actual"] == pytest.approx(0.6)
    assert 0.9 < c["pearson_r"] <= 1.0
