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

Pure torch, no I/O. Simplifications against Meta's trainer: one conditioning frame, no re-prompting on later
frames, clicks per step sampled uniformly from the error region (not the error's interior).
"""

from dataclasses import dataclass

import torch

from .losses import MaskLossWeights, combined_loss
from .prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NEGATIVE, POSITIVE
from .sam2 import NO_OBJECT_LOGIT, SAM2Model

PROMPT_KINDS = ("mask", "point", "box")


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
    "point" (one positive click uniform in the mask) or "box" (the mask's box, corners jittered by up to
    box_noise of its size, as SAM 2's training does). Objects must be visible."""
    if kind == "point":
        return sample_clicks(torch.zeros_like(gt), gt, generator)
    if kind != "box":
        raise ValueError(f"prompt kind must be 'point' or 'box' here, got {kind!r}")
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
    noise = torch.rand(box.shape, generator=generator, device="cpu").to(gt.device) * 2 - 1
    box = (box + noise * size * box_noise).clamp(0, S - 1)
    labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int32, device=gt.device)
    return box.view(-1, 2, 2), labels.expand(gt.shape[0], 2).contiguous()


def sample_clicks(pred: torch.Tensor, gt: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per object from (O, S, S) bool prediction and GT -> points (O, 1, 2), labels (O, 1).

    Uniform over the error region; positive where the GT was missed, negative on a false alarm. With no error
    anywhere the click is uniform over the frame, labelled by the GT there."""
    O, S, _ = gt.shape
    error = (pred != gt).flatten(1).float()  # (O, S*S)
    weights = error + 1e-6 * (error.sum(1, keepdim=True) == 0)  # uniform fallback without a sync
    idx = torch.multinomial(weights.cpu(), 1, generator=generator).to(gt.device)[:, 0]  # (O,)
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


def _clip_memory(model: SAM2Model, mems: list, ptrs: list, frame_index: list[int], pos: int,
                 num_recent: int):
    """Memory of position `pos` from the clip's earlier memories (O, Cm, h, w) / pointers (O, C)."""
    cfg = model.cfg
    f = frame_index[pos]
    last_slot = cfg.num_maskmem - 1
    # Conditioning frame first, then recent frames by increasing age: memory_batch.py's order.
    recent = sorted((f - frame_index[j], j) for j in range(1, pos) if f - frame_index[j] <= num_recent)
    spatial = [mems[0]] + [mems[j] for _, j in recent]
    tpos = [last_slot] + [min(d, last_slot) - 1 for d, _ in recent]
    ptr_recent = sorted((f - frame_index[j], j) for j in range(1, pos) if f - frame_index[j] <= cfg.max_obj_ptrs - 1)
    ptr_list = [ptrs[0]] + [ptrs[j] for _, j in ptr_recent]
    offsets = [f - frame_index[0]] + [d for d, _ in ptr_recent]
    O, Cm = mems[0].shape[:2]
    C = ptrs[0].shape[1]
    k = C // Cm  # a pointer of width C becomes k memory tokens of width Cm
    spatial_t = torch.stack(spatial, 1).flatten(3).transpose(2, 3)  # (O, s, hw, Cm)
    tpos_enc = model.maskmem_tpos_enc.view(cfg.num_maskmem, Cm)[torch.tensor(tpos, device=spatial_t.device)]
    pos_s = model.memory_pos(spatial_t.device)[None] + tpos_enc[:, None, :]  # (s, hw, Cm)
    ptr_t = torch.stack(ptr_list, 1)  # (O, P, C)
    P = ptr_t.shape[1]
    pos_p = model.pointer_pos(torch.tensor(offsets, device=ptr_t.device, dtype=torch.float32))  # (P, Cm)
    memory = torch.cat([spatial_t.flatten(1, 2), ptr_t.reshape(O, P * k, Cm).to(spatial_t.dtype)], 1)
    memory_pos = torch.cat([pos_s.flatten(0, 1), pos_p.repeat_interleave(k, 0)], 0)  # (L, Cm)
    return memory, memory_pos.to(memory.dtype).expand(O, -1, -1), P * k


def _first_decode(model, f, gt, prompt, points, labels, pos, mems, ptrs, frame_index, num_recent):
    """The first decode of position `pos`: from the prompt on frame 0, from memory on later frames."""
    feat, high_res = f.feat, f.high_res
    if pos == 0 and prompt == "mask":
        d = model.decode_mask_prompt(feat, high_res, gt[:, None].float())
        out = StepOutput(d.low_res, d.iou[:, None], d.object_score_logits, d.low_res)
        return out, d.obj_ptr, feat
    if pos == 0:
        fused = model.without_memory(feat)
        step, ptr = _decode_all(model, fused, high_res, points, labels, None,
                                points.shape[1] <= model.cfg.multimask_max_pt_num)
        return step, ptr, fused
    memory, memory_pos, n_ptr = _clip_memory(model, mems, ptrs, frame_index, pos, num_recent)
    fused = model.fuse_with_memory(feat, f.pos, memory, memory_pos, n_ptr, None)
    step, ptr = _decode_all(model, fused, high_res, None, None, None, model.cfg.multimask_for_tracking)  # as inference
    return step, ptr, fused


def clip_forward(model: SAM2Model, frames: torch.Tensor, gt_masks: torch.Tensor, frame_index: list[int],
                 prompt: str = "mask", clicks: dict[int, int] | None = None,
                 generator: torch.Generator | None = None, num_recent: int = 6) -> list[FrameOutput]:
    """Unroll SAM 2's training recipe over one clip -> one FrameOutput per position.

    frames (T, 3, S, S) normalised; gt_masks (T, O, S, S) bool, every object visible on position 0;
    frame_index: T increasing video frame indices (gaps = dropped frames); prompt: "mask", "point" or "box"
    on position 0; clicks: {position: corrective clicks} (a mask prompt frame is never corrected)."""
    if prompt not in PROMPT_KINDS:
        raise ValueError(f"prompt must be one of {PROMPT_KINDS}, got {prompt!r}")
    T, O = gt_masks.shape[:2]
    if frames.shape[0] != T or len(frame_index) != T:
        raise ValueError(f"{frames.shape[0]} frames, {T} GT frames, {len(frame_index)} frame indices")
    feats = model.encode_frames(frames)  # feat (T, C, h, w), high_res [(T, ., 4h, 4w), (T, ., 2h, 2w)]
    clicks = clicks or {}
    mems, ptrs, outputs = [], [], []
    points, labels = (None, None) if prompt == "mask" else gt_prompt(gt_masks[0], prompt, generator)
    for pos in range(T):
        rows = torch.full((O,), pos, dtype=torch.long, device=frames.device)
        f = feats.select(rows)  # this frame's features once per object
        gt = gt_masks[pos]  # (O, S, S)
        step, ptr, fused = _first_decode(model, f, gt, prompt, points, labels, pos, mems, ptrs, frame_index,
                                         num_recent)
        steps = [step]
        n_clicks = 0 if (pos == 0 and prompt == "mask") else clicks.get(pos, 0)
        p, l = (points, labels) if pos == 0 else (None, None)
        for _ in range(n_clicks):
            step, ptr, p, l = _correct(model, fused, f.high_res, step, gt, p, l, generator)
            steps.append(step)
        prompted = pos == 0 or n_clicks > 0  # prompted frames are remembered binarised, as inference does
        high = model.upsample(step.chosen)
        binarize = torch.full((O,), prompted, dtype=torch.bool, device=frames.device)
        mems.append(model.encode_memory(f.feat, high, step.object_score_logits, binarize))
        ptrs.append(ptr)
        outputs.append(FrameOutput(pos, int(frame_index[pos]), steps))
    return outputs


def _correct(model, fused, high_res, prev: StepOutput, gt, points, labels, generator):
    """One corrective click from the error of `prev`, decoded with all clicks and prev's logits."""
    S = gt.shape[-1]
    pred = model.upsample(prev.chosen.detach())[:, 0] > 0  # (O, S, S)
    new_p, new_l = sample_clicks(pred, gt, generator)
    points = new_p if points is None else torch.cat([points, new_p], 1)
    labels = new_l if labels is None else torch.cat([labels, new_l], 1)
    mask_input = prev.chosen.clamp(-32.0, 32.0)  # the tracker's clamp: -1024 for absent objects would swamp it
    if mask_input.shape[-2:] != model.sam_prompt_encoder.mask_input_size:
        raise ValueError(f"low-res logits {tuple(mask_input.shape)} do not match the mask input size (S={S})")
    step, ptr = _decode_all(model, fused, high_res, points, labels, mask_input,
                            points.shape[1] <= model.cfg.multimask_max_pt_num)
    return step, ptr, points, labels


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
