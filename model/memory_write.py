"""Writing a frame's memories into the banks: the one path the tracker and training share.

Per object and frame: encode its memory from the raw frame features and the frame's output mask (binarised on
prompted frames, as the user saw it; a probability otherwise), keep it in bf16 as the reference does, and store
it by the policy's rules: a prompted frame into the conditioning slots, a tracked frame into the recent ring
(with selective storing only when the object is present enough), every `keyframe_every` frames also as a
long-term keyframe.
"""

import torch

from .memory_bank import MemoryPolicy, ObjectMemory


def encode_memories(model, raw_feat: torch.Tensor, mask_logits: torch.Tensor, object_score_logits: torch.Tensor,
                    prompted: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) raw features, (N, 1, S, S) output logits, (N, 1) presence, (N,) bool -> (N, Cm, h, w) bf16."""
    return model.encode_memory(raw_feat, mask_logits, object_score_logits, prompted).to(torch.bfloat16)


def worth_storing(policy: MemoryPolicy, object_score_logits: torch.Tensor) -> list[bool]:
    """Per row, whether a tracked frame is remembered: always, or with selective storing when the object's
    presence probability reaches the policy's threshold (the one host read this policy costs)."""
    rows = object_score_logits.shape[0]
    if policy.store_threshold is None:
        return [True] * rows
    present = torch.sigmoid(object_score_logits[:, 0].detach().float()) >= policy.store_threshold
    return present.tolist()


def new_bank(model, policy: MemoryPolicy, object_id: int, frame: int, mem: torch.Tensor,
             ptr: torch.Tensor, preallocate: bool = False) -> ObjectMemory:
    """An empty bank for an object joining at `frame`, shaped after one of its memories (Cm, h, w) and pointers;
    its stores grow as used, or hold every slot from the start with `preallocate`."""
    num_ptrs = model.cfg.max_obj_ptrs - 1 if policy.num_recent else 0  # memory off: no recent pointers
    return ObjectMemory.allocate(object_id, frame, policy, num_ptrs, tuple(mem.shape), ptr.shape[-1], mem.device,
                                 preallocate)


def store_memory(bank: ObjectMemory, policy: MemoryPolicy, frame: int, mem: torch.Tensor, ptr: torch.Tensor,
                 conditioning: bool, keep: bool) -> None:
    """Store one object's memory (Cm, h, w) and pointer (C,) of `frame`: a conditioning frame (a prompt), or a
    tracked or corrected frame when `keep` (worth_storing)."""
    if conditioning:
        bank.store_cond(frame, mem, ptr)
    elif keep:
        bank.store_recent(frame, mem, ptr)
        if policy.is_keyframe(frame - bank.first_frame):
            bank.store_keyframe(frame, mem)
