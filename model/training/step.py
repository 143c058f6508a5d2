"""A differentiable clip forward for training: SAM 2's video training recipe unrolled over a short clip, on
the tracker's own path.

For O objects of one clip of T frames (frame indices may have gaps: dropped frames simulate occlusion gaps
and make the memory's ages irregular, as at inference after a hidden stretch):
- position 0 is the conditioning frame, decoded from its prompt (a GT mask, a click or a box derived from the
  GT) as the tracker decodes a prompt (`SAM2Model.decode_mask_prompt`, or `decode` without memory);
- every later position is decoded from memory attention over the clip's earlier frames. Each object has an
  ObjectMemory bank (memory_bank.py) that its frames are stored into by memory_write.py and read from by
  memory_batch.build_memory_batch, the functions the tracker uses, under the clip's MemoryPolicy (sampled per
  clip by the trainer: selective storing, keyframes, decay, memory size); then `SAM2Model.decode`;
- positions listed in `clicks` get corrective clicks: a point sampled from the error region between the
  prediction and the GT (positive on misses, negative on false alarms), decoded again with all clicks so far
  and the previous logits as mask input, as SAM 2's training and the tracker's corrections do. Every step,
  with every candidate mask (multimask), is returned for supervision;
- the memory of each frame is encoded from its final prediction: binarised where the frame had a prompt or
  clicks, sigmoid otherwise, kept in bf16 as at inference. Memories keep their graph (bank slots are written
  in place; autograd follows the copies), so later frames' losses train the memory encoder and attention.

`clips_forward` unrolls several clips of one length as one batch of their objects (ragged memories padded with
a -inf attention bias, one memory-attention call per policy): the same arithmetic as one clip at a time in
fewer, larger calls; tests/test_train.py checks both that and equality with StreamingTracker's logits. Pure
torch, no I/O. Simplifications against Meta's trainer: one conditioning frame, no re-prompting on later frames,
clicks sampled uniformly from the error region (not the error's interior).
"""

from dataclasses import dataclass, field

import torch

from .losses import MaskLossWeights, combined_loss
from ..memory_bank import MemoryPolicy, ObjectMemory
from ..memory_batch import build_memory_batch
from ..memory_write import encode_memories, new_bank, store_memory, worth_storing
from ..prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NEGATIVE, POSITIVE
from ..sam2 import Decoded, FrameFeatures, SAM2Model
from ..transfer import to_device

from ..prompts import PROMPT_KINDS


@dataclass
class StepOutput:
    """One prediction step for O objects on one frame (first decode or one corrective click)."""

    logits: torch.Tensor  # (O, M, S/4, S/4) every candidate (M = 3 when multimask, else 1)
    ious: torch.Tensor  # (O, M) predicted IoUs
    object_score_logits: torch.Tensor  # (O, 1)
    chosen: torch.Tensor  # (O, 1, S/4, S/4) the candidate with the highest predicted IoU


@dataclass
class FrameOutput:
    position: int  # index into the clip
    frame_index: int  # frame index in the video (gaps where frames were dropped)
    steps: list[StepOutput]  # first decode, then one per corrective click


def gt_prompt(gt: torch.Tensor, kind: str, generator: torch.Generator | None = None,
              box_noise: float = 0.1) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Points (O, P, 2) x, y in model pixels and labels (O, P) from GT masks (O, S, S) for `kind`
    "points" (one positive click uniform in the mask) or "box" (the mask's box, corners jittered by up to
    box_noise of its size, as SAM 2's training does). Objects must be visible."""
    if kind == "points":
        return sample_clicks(torch.zeros_like(gt), gt, generator)
    if kind != "box":
        raise ValueError(f"prompt kind must be 'points' or 'box' here, got {kind!r}")
    S = gt.shape[-1]
    ar = torch.arange(S, device=gt.device, dtype=torch.float32)
    big = float(S)
    xs = torch.where(gt.any(1), ar, torch.full_like(ar, big))  # (O, S) columns present
    ys = torch.where(gt.any(2), ar, torch.full_like(ar, big))
    x0, y0 = xs.min(1).values, ys.min(1).values
    x1 = torch.where(gt.any(1), ar, -big).max(1).values
    y1 = torch.where(gt.any(2), ar, -big).max(1).values
    box = torch.stack([x0, y0, x1, y1], 1)  # (O, 4)
    size = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1)
    noise = to_device(torch.rand(box.shape, generator=generator, device="cpu"), gt.device) * 2 - 1
    box = (box + noise * size * box_noise).clamp(0, S - 1)
    labels = to_device([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], gt.device, torch.int32)
    return box.view(-1, 2, 2), labels.expand(gt.shape[0], 2).contiguous()


def sample_clicks(pred: torch.Tensor, gt: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per object from (O, S, S) bool prediction and GT -> points (O, 1, 2), labels (O, 1).

    Uniform over the error region; positive where the GT was missed, negative on a false alarm. With no error
    anywhere the click is uniform over the frame, labelled by the GT there."""
    O, S, _ = gt.shape
    error = (pred != gt).flatten(1).float()  # (O, S*S)
    weights = error + 1e-6 * (error.sum(1, keepdim=True) == 0)  # uniform fallback without a sync
    # Drawn on the host with the clip's generator (the same clicks on any device): the one sync of a click round.
    idx = to_device(torch.multinomial(weights.cpu(), 1, generator=generator), gt.device)[:, 0]  # (O,)
    y, x = idx // S, idx % S
    positive = gt.flatten(1).gather(1, idx[:, None])[:, 0]
    labels = torch.where(positive, POSITIVE, NEGATIVE).to(torch.int32)
    return torch.stack([x, y], 1).float()[:, None], labels[:, None]


def _step(d: Decoded) -> StepOutput:
    return StepOutput(d.candidates, d.candidate_ious, d.object_score_logits.float(), d.low_res)


@dataclass
class TrainClip:
    """One clip's inputs to `clips_forward`."""

    frames: torch.Tensor  # (T, 3, S, S) normalised
    gt_masks: torch.Tensor  # (T, O, S, S) bool, every object visible on position 0
    frame_index: list[int]  # T increasing video frame indices (gaps = dropped frames)
    prompt: str = "mask"  # position 0's prompt: "mask", "points" or "box"
    clicks: dict[int, int] = field(default_factory=dict)  # {position: corrective clicks}
    generator: torch.Generator | None = None  # this clip's box noise and click draws
    policy: MemoryPolicy = MemoryPolicy()  # the memory the clip is unrolled with (sampled per clip in training)


def _prompt_decode(model: SAM2Model, f: FrameFeatures, gt, kind: str, points, labels):
    """Position 0 of clips prompted with `kind` (their objects' features `f`): the tracker's PROMPT decode
    -> (Decoded, features the clicks decode from)."""
    if kind == "mask":
        return model.decode_mask_prompt(f.feat, f.high_res, gt[:, None].float()), f.feat
    fused = model.without_memory(f.feat)
    return model.decode(fused, f.high_res, points, labels, None, points.shape[1] <= model.cfg.multimask_max_pt_num), fused


def clips_forward(model: SAM2Model, clips: list[TrainClip]) -> list[list[FrameOutput]]:
    """Unroll SAM 2's training recipe over clips of one length at once -> per clip, one FrameOutput per
    position. The clips' objects are one batch at every position (the image encoder sees all their frames in
    one call; memory attention runs once per memory policy among the clips)."""
    T = len(clips[0].frame_index)
    for c in clips:
        if c.prompt not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}, got {c.prompt!r}")
        if c.frames.shape[0] != T or c.gt_masks.shape[0] != T or len(c.frame_index) != T:
            raise ValueError(f"clips of {T} positions expected: {c.frames.shape[0]} frames, "
                             f"{c.gt_masks.shape[0]} GT frames, {len(c.frame_index)} frame indices")
    sizes = [c.gt_masks.shape[1] for c in clips]
    device = clips[0].frames.device
    feats = model.encode_frames(torch.cat([c.frames for c in clips]))  # (len(clips) * T, ...) one call
    frame_row = to_device([i * T for i, n in enumerate(sizes) for _ in range(n)], device, torch.long)  # (N,)
    prompts = [(None, None) if c.prompt == "mask" else gt_prompt(c.gt_masks[0], c.prompt, c.generator)
               for c in clips]
    state = _ClipsState(clips, sizes, prompts, [[] for _ in clips])
    outputs: list[list[FrameOutput]] = [[] for _ in clips]
    for pos in range(T):
        f = feats.select(frame_row + pos)  # each object's frame features
        gt = torch.cat([c.gt_masks[pos] for c in clips])  # (N, S, S)
        steps, last, fused = _first_decodes(model, state, f, gt, pos)
        steps, last = _corrections(model, state, f, fused, gt, pos, steps, last)
        _remember(model, state, f.feat, last, pos)
        for i, c in enumerate(clips):
            outputs[i].append(FrameOutput(pos, int(c.frame_index[pos]), steps[i]))
    return outputs


@dataclass
class _ClipsState:
    """Per-clip bookkeeping of one `clips_forward`: object ranges, position 0's prompt points, memory banks."""

    clips: list[TrainClip]
    sizes: list[int]  # objects per clip
    prompts: list[tuple[torch.Tensor | None, torch.Tensor | None]]  # position 0's points (O, P, 2), labels
    banks: list[list[ObjectMemory]]  # per clip, one bank per object (memory_bank.py, as the tracker's)

    def rows(self, i: int) -> slice:
        start = sum(self.sizes[:i])
        return slice(start, start + self.sizes[i])

    def n_clicks(self, i: int, pos: int) -> int:
        c = self.clips[i]
        return 0 if (pos == 0 and c.prompt == "mask") else c.clicks.get(pos, 0)  # a mask prompt is never corrected


def _index(state: _ClipsState, members: list[int], device) -> torch.Tensor:
    return torch.cat([torch.arange(state.rows(i).start, state.rows(i).stop, device=device) for i in members])


def _fuse(model: SAM2Model, state: _ClipsState, f: FrameFeatures, pos: int) -> torch.Tensor:
    """Memory attention for every object at `pos` > 0, from its bank laid out by build_memory_batch (the
    tracker's function), one batch per memory policy -> fused features (N, C, h, w)."""
    n, policies = len(state.clips), []
    for c in state.clips:
        if c.policy not in policies:
            policies.append(c.policy)
    fused = [None] * n
    for policy in policies:
        members = [i for i in range(n) if state.clips[i].policy == policy]
        banks = [b for i in members for b in state.banks[i]]
        frames = [int(state.clips[i].frame_index[pos]) for i in members for _ in range(state.sizes[i])]
        idx = _index(state, members, f.feat.device)
        batch = build_memory_batch(model, banks, frames, policy, f.feat.dtype)
        out = model.fuse_with_memory(f.feat[idx], f.pos[idx], batch.memory, batch.memory_pos,
                                     batch.num_ptr_tokens, batch.bias)
        for i, part in zip(members, out.split([state.sizes[i] for i in members])):
            fused[i] = part
    return torch.cat(fused)


def _first_decodes(model: SAM2Model, state: _ClipsState, f: FrameFeatures, gt, pos: int):
    """Every clip's first decode at `pos`: from its prompt on position 0 (one batch per prompt kind), from
    memory later (one batch) -> (per clip [StepOutput], per clip its last Decoded, fused features (N, C, h, w))."""
    n = len(state.clips)
    if pos > 0:
        fused = _fuse(model, state, f, pos)
        d = model.decode(fused, f.high_res, None, None, None, model.cfg.multimask_for_tracking)
        parts = _split_decoded(d, state.sizes)
        return [[_step(p)] for p in parts], parts, fused
    steps, last, fused = [None] * n, [None] * n, [None] * n
    for kind in PROMPT_KINDS:
        members = [i for i in range(n) if state.clips[i].prompt == kind]
        if not members:
            continue
        idx = _index(state, members, gt.device)
        points = None if kind == "mask" else torch.cat([state.prompts[i][0] for i in members])
        labels = None if kind == "mask" else torch.cat([state.prompts[i][1] for i in members])
        d, fu = _prompt_decode(model, f.select(idx), gt[idx], kind, points, labels)
        sizes = [state.sizes[i] for i in members]
        for i, di, fi in zip(members, _split_decoded(d, sizes), fu.split(sizes)):
            steps[i], last[i], fused[i] = [_step(di)], di, fi
    return steps, last, torch.cat(fused)


def _split_decoded(d: Decoded, sizes: list[int]) -> list[Decoded]:
    return [Decoded(*parts) for parts in zip(*(getattr(d, n).split(sizes) for n in _DECODED_FIELDS))]


_DECODED_FIELDS = ("low_res", "high_res", "iou", "obj_ptr", "object_score_logits", "candidates", "candidate_ious")


def _corrections(model: SAM2Model, state: _ClipsState, f: FrameFeatures, fused, gt, pos, steps, last):
    """Corrective clicks at `pos` for the clips that have them, decoded from the same fused features with the
    previous logits as mask input (the tracker's CORRECT); clips with as many points so far decode as one batch.
    Appends to `steps` -> (steps, per clip its last Decoded)."""
    n = len(state.clips)
    points = [state.prompts[i] if pos == 0 else (None, None) for i in range(n)]
    for round_ in range(max(state.n_clicks(i, pos) for i in range(n))):
        todo = [i for i in range(n) if state.n_clicks(i, pos) > round_]
        for i in todo:  # each clip's click from its own error region and generator
            points[i] = _add_click(model, last[i], gt[state.rows(i)], *points[i], state.clips[i].generator)
        for count in sorted({points[i][0].shape[1] for i in todo}):
            members = [i for i in todo if points[i][0].shape[1] == count]
            idx = _index(state, members, gt.device)
            mask_input = torch.cat([last[i].low_res for i in members]).clamp(-32.0, 32.0)
            d = model.decode(fused[idx], [x[idx] for x in f.high_res], torch.cat([points[i][0] for i in members]),
                             torch.cat([points[i][1] for i in members]), mask_input,
                             count <= model.cfg.multimask_max_pt_num)
            for i, di in zip(members, _split_decoded(d, [state.sizes[i] for i in members])):
                steps[i].append(_step(di))
                last[i] = di
    return steps, last


def _add_click(model: SAM2Model, prev: Decoded, gt, points, labels, generator):
    """Points and labels with one more corrective click, sampled from the error of `prev` (O objects).
    (The tracker clamps the previous logits it feeds back to +-32: -1024 for absent objects would swamp them.)"""
    pred = prev.high_res.detach()[:, 0] > 0  # (O, S, S)
    new_p, new_l = sample_clicks(pred, gt, generator)
    if points is None:
        return new_p, new_l
    return torch.cat([points, new_p], 1), torch.cat([labels, new_l], 1)


def _remember(model: SAM2Model, state: _ClipsState, raw_feat: torch.Tensor, last: list[Decoded], pos: int) -> None:
    """Every object's memory of `pos`, encoded and stored as the tracker does (memory_write.py): position 0 as a
    conditioning frame, corrected frames binarised into the recent ring, tracked ones by the clip's policy."""
    d = _cat_decoded(last)
    prompted = [pos == 0 or bool(state.n_clicks(i, pos)) for i in range(len(state.clips))]
    rows = to_device([p for i, p in enumerate(prompted) for _ in range(state.sizes[i])], raw_feat.device)
    # The output upsampled, as the tracker remembers it (a mask prompt too: its low-res form, not the GT itself).
    mems = encode_memories(model, raw_feat, model.upsample(d.low_res), d.object_score_logits, rows)  # (N, Cm, h, w)
    for i, c in enumerate(state.clips):
        r, frame = state.rows(i), int(c.frame_index[pos])
        keep = worth_storing(c.policy, d.object_score_logits[r])
        for j, (mem, ptr) in enumerate(zip(mems[r], d.obj_ptr[r])):
            if pos == 0:
                state.banks[i].append(new_bank(model, c.policy, j + 1, frame, mem, ptr))
            store_memory(state.banks[i][j], c.policy, frame, mem, ptr, pos == 0, keep[j])


def _cat_decoded(rows: list[Decoded]) -> Decoded:
    """Rows of several decodes, without their candidates (their count differs: 3 for a single click, else 1)."""
    return Decoded(*(torch.cat([getattr(r, n) for r in rows]) for n in _DECODED_FIELDS[:5]))


def clip_forward(model: SAM2Model, frames: torch.Tensor, gt_masks: torch.Tensor, frame_index: list[int],
                 prompt: str = "mask", clicks: dict[int, int] | None = None,
                 generator: torch.Generator | None = None, policy: MemoryPolicy = MemoryPolicy()) -> list[FrameOutput]:
    """`clips_forward` of one clip: frames (T, 3, S, S) normalised; gt_masks (T, O, S, S) bool, every object
    visible on position 0; frame_index: T increasing video frame indices (gaps = dropped frames); prompt:
    "mask", "points" or "box" on position 0; clicks: {position: corrective clicks}."""
    clip = TrainClip(frames, gt_masks, list(frame_index), prompt, dict(clicks or {}), generator, policy)
    return clips_forward(model, [clip])[0]


def clip_loss(outputs: list[FrameOutput], gt_masks: torch.Tensor,
              weights: MaskLossWeights = MaskLossWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """combined_loss summed over frames and steps (SAM 2 sums), the temporal term between consecutive frames'
    final predictions; gt_masks (T, O, S, S). -> (total, parts summed the same way)."""
    total, parts = gt_masks.new_zeros((), dtype=torch.float32), {}
    for out in outputs:
        gt = gt_masks[out.position]
        for i, step in enumerate(out.steps):
            last = i == len(out.steps) - 1 and out.position > 0
            prev = outputs[out.position - 1].steps[-1].chosen if last else None
            loss, p = combined_loss(step.logits, step.ious, step.object_score_logits, gt,
                                    prev_logits=prev, prev_targets=gt_masks[out.position - 1] if last else None,
                                    weights=weights)
            total = total + loss
            for name, value in p.items():
                parts[name] = parts.get(name, 0.0) + value.detach()
    return total, parts
