"""A differentiable clip forward for training: SAM 2's video training recipe unrolled over a short clip.

For O objects of one clip of T frames (frame indices may have gaps: dropped frames simulate occlusion gaps
and make the memory's ages irregular, as at inference after a hidden stretch):
- position 0 is the conditioning frame, decoded from its prompt (a GT mask, a click or a box derived from the
  GT by the caller) without memory (`model.without_memory`);
- every later position is decoded from memory attention over the clip's earlier frames, laid out exactly
  like inference (memory_batch.py): the conditioning memory at temporal slot num_maskmem-1, recent frames of
  age d at slot min(d, num_maskmem-1)-1, object pointers with `model.pointer_pos`; only ages the tracker would
  keep (d <= num_recent for spatial memories, d <= max_obj_ptrs-1 for pointers) are attended to;
- positions listed in `clicks` get corrective clicks: a point sampled from the error region between the
  prediction and the GT (positive on misses, negative on false alarms), decoded again with all clicks so far
  and the previous logits as mask input, as SAM 2's training does. Every step is returned for supervision;
- the memory of each frame is encoded from its final prediction: binarised where the frame had a prompt or
  clicks, sigmoid otherwise (`model.encode_memory`). Memories keep their graph, so later frames' losses
  train the memory encoder and the memory attention.

`clips_forward` unrolls several clips of one length as one batch of their objects (ragged memories padded with
a -inf attention bias): the same arithmetic as one clip at a time in fewer, larger calls. Pure torch, no I/O.
Simplifications against Meta's trainer: one conditioning frame, no re-prompting on later frames, clicks per
step sampled uniformly from the error region (not the error's interior).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .losses import MaskLossWeights, combined_loss
from ..prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NEGATIVE, POSITIVE
from ..sam2 import NO_OBJECT_LOGIT, SAM2Model
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


def _decode_all(model: SAM2Model, feat, high_res, points, labels, mask_input, multimask: bool):
    """model.decode keeping every candidate: -> (StepOutput, object pointers (O, C))."""
    N = feat.shape[0]
    if points is None:
        points = feat.new_zeros(N, 1, 2, dtype=torch.float32)
        labels = -torch.ones(N, 1, dtype=torch.int32, device=feat.device)
    sparse, dense = model.sam_prompt_encoder(points=(points, labels), masks=mask_input)
    masks, ious, tokens, obj_logits = model.sam_mask_decoder(
        image_embeddings=feat, image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        high_res_features=high_res)
    present = obj_logits > 0  # (N, 1); absent objects' masks are replaced, as in SAM 2's training
    masks = torch.where(present[:, :, None, None], masks.float(), NO_OBJECT_LOGIT)  # (N, M, h, w)
    best = ious.argmax(dim=-1)  # (N,)
    rows = torch.arange(N, device=feat.device)
    chosen = masks[rows, best].unsqueeze(1)  # (N, 1, h, w)
    token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]  # (N, C)
    ptr = model._absent_to_no_obj_ptr(model.obj_ptr_proj(token), present.float())
    return StepOutput(masks, ious.float(), obj_logits.float(), chosen), ptr


@dataclass
class TrainClip:
    """One clip's inputs to `clips_forward`."""

    frames: torch.Tensor  # (T, 3, S, S) normalised
    gt_masks: torch.Tensor  # (T, O, S, S) bool, every object visible on position 0
    frame_index: list[int]  # T increasing video frame indices (gaps = dropped frames)
    prompt: str = "mask"  # position 0's prompt: "mask", "points" or "box"
    clicks: dict[int, int] = field(default_factory=dict)  # {position: corrective clicks}
    generator: torch.Generator | None = None  # this clip's box noise and click draws


def _clip_memory(model: SAM2Model, mems: list, ptrs: list, frame_index: list[int], pos: int, num_recent: int):
    """One clip's memory at `pos` from its earlier memories (O, Cm, h, w) / pointers (O, C) ->
    (spatial (O, s, hw, Cm), temporal slots [s], pointers (O, P, C), pointer offsets [P])."""
    last_slot = model.cfg.num_maskmem - 1
    f = frame_index[pos]
    # Conditioning frame first, then recent frames by increasing age: memory_batch.py's order.
    recent = sorted((f - frame_index[j], j) for j in range(1, pos) if f - frame_index[j] <= num_recent)
    spatial = torch.stack([mems[0]] + [mems[j] for _, j in recent], 1).flatten(3).transpose(2, 3)  # (O, s, hw, Cm)
    tpos = [last_slot] + [min(d, last_slot) - 1 for d, _ in recent]
    max_age = model.cfg.max_obj_ptrs - 1
    ptr_recent = sorted((f - frame_index[j], j) for j in range(1, pos) if f - frame_index[j] <= max_age)
    ptr = torch.stack([ptrs[0]] + [ptrs[j] for _, j in ptr_recent], 1)  # (O, P, C)
    return spatial, tpos, ptr, [f - frame_index[0]] + [d for d, _ in ptr_recent]


def _batch_memory(model: SAM2Model, parts: list[tuple]):
    """Clips' `_clip_memory` parts padded into one batch (memory_batch.py's layout: [s x hw][P x k]; padding
    gets a -inf attention bias) -> memory (N, L, Cm), memory_pos (N, L, Cm), pointer tokens, bias (N, L) or None."""
    cfg = model.cfg
    s_max, p_max = max(len(p[1]) for p in parts), max(len(p[3]) for p in parts)
    spatial0, ptr0 = parts[0][0], parts[0][2]
    hw, Cm, C, device = spatial0.shape[2], spatial0.shape[3], ptr0.shape[2], spatial0.device
    k = C // Cm  # a pointer of width C becomes k memory tokens of width Cm
    grid_pos, tpos_table = model.memory_pos(device), model.maskmem_tpos_enc.view(cfg.num_maskmem, Cm)
    memory, memory_pos, bias = [], [], []
    for spatial, tpos, ptr, offsets in parts:
        O, s, P = spatial.shape[0], len(tpos), len(offsets)
        spatial = F.pad(spatial, (0, 0, 0, 0, 0, s_max - s))  # (O, s_max, hw, Cm)
        ptr = F.pad(ptr, (0, 0, 0, p_max - P)).reshape(O, p_max * k, Cm)  # (O, p_max*k, Cm)
        tpos_enc = tpos_table[to_device(tpos + [0] * (s_max - s), device, torch.long)]  # (s_max, Cm)
        pos_s = grid_pos[None] + tpos_enc[:, None, :]  # (s_max, hw, Cm)
        pos_p = model.pointer_pos(to_device(offsets + [0] * (p_max - P), device, torch.float32))
        memory.append(torch.cat([spatial.flatten(1, 2), ptr.to(spatial.dtype)], 1))  # (O, L, Cm)
        pos = torch.cat([pos_s.flatten(0, 1), pos_p.repeat_interleave(k, 0)], 0)  # (L, Cm)
        memory_pos.append(pos.to(spatial.dtype).expand(O, -1, -1))
        keep = torch.cat([torch.arange(s_max, device=device).repeat_interleave(hw) < s,
                          torch.arange(p_max, device=device).repeat_interleave(k) < P])  # (L,)
        bias.append(torch.zeros(keep.shape, device=device).masked_fill(~keep, float("-inf")).expand(O, -1))
    padded = any(len(p[1]) < s_max or len(p[3]) < p_max for p in parts)
    return torch.cat(memory), torch.cat(memory_pos), p_max * k, torch.cat(bias) if padded else None


def _cat_steps(steps: list[StepOutput]) -> StepOutput:
    return StepOutput(*(torch.cat([getattr(s, n) for s in steps]) for n in ("logits", "ious",
                                                                          "object_score_logits", "chosen")))


def _split_step(step: StepOutput, sizes: list[int]) -> list[StepOutput]:
    fields = (step.logits, step.ious, step.object_score_logits, step.chosen)
    return [StepOutput(*parts) for parts in zip(*(x.split(sizes) for x in fields))]


def _prompt_decode(model, f, gt, kind: str, points, labels):
    """Position 0 of clips prompted with `kind` (their objects' features `f`) -> (StepOutput, pointers, fused)."""
    if kind == "mask":
        d = model.decode_mask_prompt(f.feat, f.high_res, gt[:, None].float())
        return StepOutput(d.low_res, d.iou[:, None], d.object_score_logits, d.low_res), d.obj_ptr, f.feat
    fused = model.without_memory(f.feat)
    step, ptr = _decode_all(model, fused, f.high_res, points, labels, None,
                            points.shape[1] <= model.cfg.multimask_max_pt_num)
    return step, ptr, fused


def clips_forward(model: SAM2Model, clips: list[TrainClip], num_recent: int = 6) -> list[list[FrameOutput]]:
    """Unroll SAM 2's training recipe over clips of one length at once -> per clip, one FrameOutput per
    position. The clips' objects are one batch at every position (the image encoder sees all their frames in
    one call): the same arithmetic as one clip at a time, at a fraction of the calls."""
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
    state = _ClipsState(clips, sizes, prompts)
    outputs: list[list[FrameOutput]] = [[] for _ in clips]
    mems, ptrs = [], []
    for pos in range(T):
        f = feats.select(frame_row + pos)  # each object's frame features
        gt = torch.cat([c.gt_masks[pos] for c in clips])  # (N, S, S)
        steps, ptr, fused = _first_decodes(model, state, f, gt, pos, mems, ptrs, num_recent)
        steps, ptr = _corrections(model, state, f, fused, gt, pos, steps, ptr)
        chosen = _cat_steps([s[-1] for s in steps])
        prompted = to_device([pos == 0 or bool(state.n_clicks(i, pos)) for i, n in enumerate(sizes)
                              for _ in range(n)], device)  # prompted frames are remembered binarised
        mems.append(model.encode_memory(f.feat, model.upsample(chosen.chosen), chosen.object_score_logits, prompted))
        ptrs.append(ptr)
        for i, c in enumerate(clips):
            outputs[i].append(FrameOutput(pos, int(c.frame_index[pos]), steps[i]))
    return outputs


@dataclass
class _ClipsState:
    """Per-clip bookkeeping of one `clips_forward`: object ranges and position 0's prompt points."""

    clips: list[TrainClip]
    sizes: list[int]  # objects per clip
    prompts: list[tuple[torch.Tensor | None, torch.Tensor | None]]  # position 0's points (O, P, 2), labels

    def rows(self, i: int) -> slice:
        start = sum(self.sizes[:i])
        return slice(start, start + self.sizes[i])

    def n_clicks(self, i: int, pos: int) -> int:
        c = self.clips[i]
        return 0 if (pos == 0 and c.prompt == "mask") else c.clicks.get(pos, 0)  # a mask prompt is never corrected


def _index(state: _ClipsState, members: list[int], device) -> torch.Tensor:
    return torch.cat([torch.arange(state.rows(i).start, state.rows(i).stop, device=device) for i in members])


def _first_decodes(model, state: _ClipsState, f, gt, pos, mems, ptrs, num_recent):
    """Every clip's first decode at `pos`: from its prompt on position 0 (one batch per prompt kind), from
    memory later (one batch) -> (per clip [StepOutput], pointers (N, C), fused features (N, C, h, w))."""
    n = len(state.clips)
    if pos > 0:
        parts = [_clip_memory(model, [m[state.rows(i)] for m in mems], [p[state.rows(i)] for p in ptrs],
                              state.clips[i].frame_index, pos, num_recent) for i in range(n)]
        memory, memory_pos, n_ptr, bias = _batch_memory(model, parts)
        fused = model.fuse_with_memory(f.feat, f.pos, memory, memory_pos, n_ptr, bias)
        step, ptr = _decode_all(model, fused, f.high_res, None, None, None, model.cfg.multimask_for_tracking)
        return [[s] for s in _split_step(step, state.sizes)], ptr, fused
    steps, ptr, fused = [None] * n, [None] * n, [None] * n
    for kind in PROMPT_KINDS:
        members = [i for i in range(n) if state.clips[i].prompt == kind]
        if not members:
            continue
        idx = _index(state, members, gt.device)
        points = None if kind == "mask" else torch.cat([state.prompts[i][0] for i in members])
        labels = None if kind == "mask" else torch.cat([state.prompts[i][1] for i in members])
        step, p, fu = _prompt_decode(model, f.select(idx), gt[idx], kind, points, labels)
        sizes = [state.sizes[i] for i in members]
        for i, s, pi, fi in zip(members, _split_step(step, sizes), p.split(sizes), fu.split(sizes)):
            steps[i], ptr[i], fused[i] = [s], pi, fi
    return steps, torch.cat(ptr), torch.cat(fused)


def _corrections(model, state: _ClipsState, f, fused, gt, pos, steps, ptr):
    """Corrective clicks at `pos` for the clips that have them; clips with as many points so far decode as one
    batch. Appends to `steps` -> (steps, pointers (N, C) of each object's last decode)."""
    n = len(state.clips)
    points = [state.prompts[i] if pos == 0 else (None, None) for i in range(n)]
    ptrs = list(ptr.split(state.sizes))
    for round_ in range(max(state.n_clicks(i, pos) for i in range(n))):
        todo = [i for i in range(n) if state.n_clicks(i, pos) > round_]
        for i in todo:  # each clip's click from its own error region and generator
            points[i] = _add_click(model, steps[i][-1], gt[state.rows(i)], *points[i], state.clips[i].generator)
        for count in sorted({points[i][0].shape[1] for i in todo}):
            members = [i for i in todo if points[i][0].shape[1] == count]
            idx = _index(state, members, gt.device)
            mask_input = torch.cat([steps[i][-1].chosen for i in members]).clamp(-32.0, 32.0)
            step, p = _decode_all(model, fused[idx], [x[idx] for x in f.high_res],
                                  torch.cat([points[i][0] for i in members]),
                                  torch.cat([points[i][1] for i in members]), mask_input,
                                  count <= model.cfg.multimask_max_pt_num)
            sizes = [state.sizes[i] for i in members]
            for i, s, pi in zip(members, _split_step(step, sizes), p.split(sizes)):
                steps[i].append(s)
                ptrs[i] = pi
    return steps, torch.cat(ptrs)


def _add_click(model, prev: StepOutput, gt, points, labels, generator):
    """Points and labels with one more corrective click, sampled from the error of `prev` (O objects).
    (The tracker clamps the previous logits it feeds back to +-32: -1024 for absent objects would swamp them.)"""
    pred = model.upsample(prev.chosen.detach())[:, 0] > 0  # (O, S, S)
    if prev.chosen.shape[-2:] != model.sam_prompt_encoder.mask_input_size:
        raise ValueError(f"low-res logits {tuple(prev.chosen.shape)} do not match the mask input size")
    new_p, new_l = sample_clicks(pred, gt, generator)
    if points is None:
        return new_p, new_l
    return torch.cat([points, new_p], 1), torch.cat([labels, new_l], 1)


def clip_forward(model: SAM2Model, frames: torch.Tensor, gt_masks: torch.Tensor, frame_index: list[int],
                 prompt: str = "mask", clicks: dict[int, int] | None = None,
                 generator: torch.Generator | None = None, num_recent: int = 6) -> list[FrameOutput]:
    """`clips_forward` of one clip: frames (T, 3, S, S) normalised; gt_masks (T, O, S, S) bool, every object
    visible on position 0; frame_index: T increasing video frame indices (gaps = dropped frames); prompt:
    "mask", "points" or "box" on position 0; clicks: {position: corrective clicks}."""
    clip = TrainClip(frames, gt_masks, list(frame_index), prompt, dict(clicks or {}), generator)
    return clips_forward(model, [clip], num_recent)[0]


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
