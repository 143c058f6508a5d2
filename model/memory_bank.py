"""The memory bank: what each object keeps from past frames, bounded by a MemoryPolicy.

Per object, preallocated once with static shapes:
  - conditioning slots (prompted frames): spatial memory + object pointer, a ring of `max_cond`;
  - recent slots (tracked frames): spatial memory in a ring of `num_recent`, keyed by frame index;
  - pointer slots: object pointers of the last `max_obj_ptrs - 1` tracked frames, keyed by frame index.
Frame indices are host metadata (python ints), so deciding which slots are live never syncs the device.
"""

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class MemoryPolicy:
    # N most recent tracked frames kept as spatial memory and pointers (the reference: 6), 0..32; 0 switches
    # memory off: every frame is decoded from its prompted frames' memories alone (an ablation).
    num_recent: int = 6
    max_cond: int = 16  # prompted frames kept; the oldest is dropped beyond this (the reference: unbounded)
    decay: float = 0.0  # lambda: attention logits of a recent memory of age dt frames get -lambda*dt
    # Selective storing: a tracked frame is remembered only when the object's presence probability is at least
    # this, and the bank keeps the N most recent remembered frames whatever their age, so an object hidden for
    # longer than N frames is still remembered as it looked. None: every tracked frame (the reference). Costs
    # one read of the objects' scores to the host per frame.
    store_threshold: float | None = None
    # Long-term keyframes: besides the N recent frames, the remembered frames every `keyframe_every` frames after
    # the object's first are kept in a FIFO of this many more slots (0: none, the reference), for long reach.
    num_keyframes: int = 0
    keyframe_every: int = 8

    def __post_init__(self):
        if not 0 <= self.num_recent <= 32:
            raise ValueError(f"num_recent must be in 0..32, got {self.num_recent}")
        if self.max_cond < 1:
            raise ValueError(f"max_cond must be >= 1, got {self.max_cond}")
        if not self.decay >= 0.0:
            raise ValueError(f"decay must be >= 0, got {self.decay}")
        if self.store_threshold is not None and not 0.0 <= self.store_threshold <= 1.0:
            raise ValueError(f"store_threshold must be a probability in [0, 1] or None, got {self.store_threshold}")
        if not 0 <= self.num_keyframes <= 32:
            raise ValueError(f"num_keyframes must be in 0..32, got {self.num_keyframes}")
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {self.keyframe_every}")
        if self.num_keyframes and not self.num_recent:
            raise ValueError(f"num_keyframes={self.num_keyframes} needs memory on (num_recent > 0)")

    def is_keyframe(self, age: int) -> bool:
        """Whether a remembered frame `age` frames after the object's first frame is also a keyframe."""
        return self.num_keyframes > 0 and age % self.keyframe_every == 0


@dataclass
class ObjectMemory:
    """One object's bank. Tensors are allocated once; `*_frames` say which slots hold which frame (-1: empty)."""

    object_id: int
    first_frame: int  # frame the object joined at
    cond_feats: torch.Tensor  # (max_cond, Cm, h, w) bf16, spatial memories of prompted frames
    cond_ptrs: torch.Tensor  # (max_cond, C) object pointers of prompted frames
    cond_frames: list[int]  # (max_cond,) frame index per slot
    recent_feats: torch.Tensor  # (num_recent, Cm, h, w) bf16, FIFO: a new frame replaces the oldest
    recent_frames: list[int]  # (num_recent,)
    ptrs: torch.Tensor  # (num_ptrs, C) FIFO as recent_feats
    ptr_frames: list[int]  # (num_ptrs,)
    num_cond_stored: int = 0  # prompted frames ever stored (the next cond slot is this % max_cond)
    key_feats: torch.Tensor | None = None  # (num_keyframes, Cm, h, w) bf16, long-term keyframes, FIFO
    key_frames: list[int] = field(default_factory=list)  # (num_keyframes,)
    # Derived, never saved: memory attention's keys and values of stored memories (memory_kv.py), per
    # ("cond" | "key" | "recent", slot) -> (frame, (L, 2, H, hw, d)); an entry goes when its slot is overwritten.
    kv_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def allocate(cls, object_id: int, first_frame: int, policy: MemoryPolicy, num_ptrs: int,
                 mem_shape: tuple[int, int, int], ptr_dim: int, device: torch.device) -> "ObjectMemory":
        return cls(
            object_id, first_frame,
            torch.zeros(policy.max_cond, *mem_shape, dtype=torch.bfloat16, device=device),
            torch.zeros(policy.max_cond, ptr_dim, device=device), [-1] * policy.max_cond,
            torch.zeros(policy.num_recent, *mem_shape, dtype=torch.bfloat16, device=device),
            [-1] * policy.num_recent,
            torch.zeros(num_ptrs, ptr_dim, device=device), [-1] * num_ptrs, 0,
            torch.zeros(policy.num_keyframes, *mem_shape, dtype=torch.bfloat16, device=device),
            [-1] * policy.num_keyframes,
        )

    def store_cond(self, frame: int, feats: torch.Tensor, ptr: torch.Tensor) -> None:
        slot = self.num_cond_stored % len(self.cond_frames)
        self.cond_feats[slot] = feats
        self.cond_ptrs[slot] = ptr
        self.cond_frames[slot] = frame
        self.num_cond_stored += 1
        self.kv_cache.pop(("cond", slot), None)

    def store_recent(self, frame: int, feats: torch.Tensor, ptr: torch.Tensor) -> None:
        """FIFO: into the slot of the oldest remembered frame (empty slots first)."""
        if not self.recent_frames:  # memory off: tracked frames are not remembered
            return
        slot = _fifo_slot(self.recent_frames, frame)
        self.recent_feats[slot] = feats
        self.recent_frames[slot] = frame
        self.kv_cache.pop(("recent", slot), None)
        slot = _fifo_slot(self.ptr_frames, frame)
        self.ptrs[slot] = ptr
        self.ptr_frames[slot] = frame

    def store_keyframe(self, frame: int, feats: torch.Tensor) -> None:
        slot = _fifo_slot(self.key_frames, frame)
        self.key_feats[slot] = feats
        self.key_frames[slot] = frame
        self.kv_cache.pop(("key", slot), None)

    def capacity(self) -> tuple[int, int]:
        """(spatial frames, pointers) this bank can put in front of memory attention until its next prompt:
        the static shapes a compiled step pads to."""
        cond = sum(f >= 0 for f in self.cond_frames)
        return cond + len(self.key_frames) + len(self.recent_frames), cond + len(self.ptr_frames)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"cond_feats": self.cond_feats, "cond_ptrs": self.cond_ptrs, "recent_feats": self.recent_feats,
                "ptrs": self.ptrs, **({"key_feats": self.key_feats} if self.key_frames else {})}


@dataclass(frozen=True)
class MemoryView:
    """Which slots one object attends to at one frame (host metadata only)."""

    cond_slots: list[int]  # conditioning slots, all at temporal slot num_maskmem - 1
    cond_ages: list[int]  # frames since each conditioning frame
    recent_slots: list[int]  # recent ring slots, newest first
    recent_ages: list[int]  # frames since each (the reference: 1..num_recent; selective storing: any)
    recent_order: list[int]  # temporal position of each: its age (the reference) or its rank 1, 2, .. (selective)
    key_slots: list[int]  # keyframe slots not among the recent frames, newest first
    key_ages: list[int]
    ptr_cond_slots: list[int]  # conditioning pointers in the past
    ptr_recent_slots: list[int]  # pointer ring slots
    ptr_recent_ages: list[int]

    @property
    def num_spatial(self) -> int:
        return len(self.cond_slots) + len(self.key_slots) + len(self.recent_slots)

    @property
    def num_ptrs(self) -> int:
        return len(self.ptr_cond_slots) + len(self.ptr_recent_slots)


def select_memories(mem: ObjectMemory, frame: int, selective: bool = False) -> MemoryView:
    """The reference's choice: every kept prompted frame, tracked frames t-1..t-N and pointers t-1..t-P. With
    selective storing: every remembered tracked frame and pointer before t (the N and P newest stored)."""
    cond = [s for s, f in enumerate(mem.cond_frames) if 0 <= f]
    # Slots in storage order keep the attention sums in the same order on every run.
    cond.sort(key=lambda s: mem.cond_frames[s])
    pick = _newest if selective else _last_frames
    recent, ptr = pick(mem.recent_frames, frame), pick(mem.ptr_frames, frame)
    past_cond = [s for s in cond if mem.cond_frames[s] <= frame]
    recent_frames = {mem.recent_frames[s] for s, _ in recent}
    keys = [(s, d) for s, d in _newest(mem.key_frames, frame) if frame - d not in recent_frames]
    return MemoryView(
        cond, [frame - mem.cond_frames[s] for s in cond],
        [s for s, _ in recent], [d for _, d in recent],
        list(range(1, len(recent) + 1)) if selective else [d for _, d in recent],
        [s for s, _ in keys], [d for _, d in keys],
        past_cond, [s for s, _ in ptr], [d for _, d in ptr],
    )


def _last_frames(frames: list[int], frame: int) -> list[tuple[int, int]]:
    """(slot, age) of the slots holding exactly frames t-1 .. t-len(frames), newest first."""
    slot_of = {f: s for s, f in enumerate(frames) if f >= 0}
    ages = range(1, min(len(frames), frame) + 1)
    return [(slot_of[frame - d], d) for d in ages if frame - d in slot_of]


def _newest(frames: list[int], frame: int) -> list[tuple[int, int]]:
    """(slot, age) of every slot holding a frame before t, newest first."""
    return sorted(((s, frame - f) for s, f in enumerate(frames) if 0 <= f < frame), key=lambda sd: sd[1])


def _fifo_slot(frames: list[int], frame: int) -> int:
    """The slot `frame` goes to: its own when stored already, else the oldest (-1, empty, is oldest)."""
    return frames.index(frame) if frame in frames else min(range(len(frames)), key=frames.__getitem__)
