"""The memory bank: what each object keeps from past frames, bounded by a MemoryPolicy.

Per object, in SlotStores (memory_store.py) that grow as used up to the policy's capacity:
  - prompted frames: spatial memory + object pointer, FIFO of `max_cond`;
  - recent frames: the `num_recent` newest remembered frames' spatial memories, FIFO; with hierarchical
    storage the newest `coarse_after` of them at full resolution, the older ones pooled to half;
  - keyframes: a remembered frame every `keyframe_every` frames, FIFO of `num_keyframes`;
  - the retrieval pool: frames pushed out of the recent ring, FIFO of `retrieval_pool`, of which a frame
    attends to the `retrieval_topk` most relevant to it (memory_retrieval.py);
  - pointers: object pointers of the last `max_obj_ptrs - 1` remembered frames.
Frame indices are host metadata (python ints), so deciding which slots are live never syncs the device.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .memory_store import SlotStore

SPATIAL_STORES = ("cond", "key", "pool", "recent", "recent_coarse")  # stores of spatial memories, layout order


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
    # Relevance retrieval: frames leaving the recent ring go to a FIFO pool of this many (0: none, the
    # reference); each frame attends to the `retrieval_topk` pool memories most similar to it. Costs one read
    # of the similarities to the host per frame.
    retrieval_pool: int = 0
    retrieval_topk: int = 0
    # Hierarchical storage: the newest `coarse_after` remembered recent frames stay at full resolution; older
    # recent frames, keyframes and the pool are kept 2x2 average-pooled (a quarter of the bytes and tokens).
    # 0: everything at full resolution (the reference).
    coarse_after: int = 0
    int8: bool = False  # memories, pointers (and cached keys/values) in int8 with per-channel scales

    def __post_init__(self):
        _check(0 <= self.num_recent <= 32, "num_recent must be in 0..32", self.num_recent)
        _check(self.max_cond >= 1, "max_cond must be >= 1", self.max_cond)
        _check(self.decay >= 0.0, "decay must be >= 0", self.decay)
        if self.store_threshold is not None:
            _check(0.0 <= self.store_threshold <= 1.0, "store_threshold must be a probability in [0, 1] or None",
                   self.store_threshold)
        _check(0 <= self.num_keyframes <= 32, "num_keyframes must be in 0..32", self.num_keyframes)
        _check(self.keyframe_every >= 1, "keyframe_every must be >= 1", self.keyframe_every)
        _check(0 <= self.retrieval_pool <= 64, "retrieval_pool must be in 0..64", self.retrieval_pool)
        _check(0 <= self.retrieval_topk <= self.retrieval_pool, "retrieval_topk must be in 0..retrieval_pool",
               self.retrieval_topk)
        _check((self.retrieval_pool == 0) == (self.retrieval_topk == 0),
               "retrieval_pool and retrieval_topk must be both 0 or both > 0", (self.retrieval_pool,
                                                                               self.retrieval_topk))
        _check(0 <= self.coarse_after <= 32, "coarse_after must be in 0..32", self.coarse_after)
        _check(isinstance(self.int8, bool), "int8 must be a bool", self.int8)
        for name in ("num_keyframes", "retrieval_pool", "coarse_after"):
            _check(not getattr(self, name) or self.num_recent > 0,
                   f"{name}={getattr(self, name)} needs memory on (num_recent > 0)", getattr(self, name))

    def is_keyframe(self, age: int) -> bool:
        """Whether a remembered frame `age` frames after the object's first frame is also a keyframe."""
        return self.num_keyframes > 0 and age % self.keyframe_every == 0

    @property
    def fine_recent(self) -> int:
        """Recent frames kept at full resolution."""
        return min(self.num_recent, self.coarse_after) if self.coarse_after else self.num_recent


def _check(ok: bool, message: str, value) -> None:
    if not ok:
        raise ValueError(f"{message}, got {value!r}")


@dataclass
class ObjectMemory:
    """One object's bank: its SlotStores, and derived caches that snapshots never carry."""

    object_id: int
    first_frame: int  # frame the object joined at
    stores: dict[str, SlotStore]  # SPATIAL_STORES + "cond_ptrs" (the cond slots' pointers) + "ptrs" + "pool_desc"
    num_cond_stored: int = 0  # prompted frames ever stored
    # Derived, never saved: memory attention's keys and values of stored memories (memory_kv.py), per
    # (store, slot) -> (frame, entry); an entry goes when its slot is overwritten.
    kv_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def allocate(cls, object_id: int, first_frame: int, policy: MemoryPolicy, num_ptrs: int,
                 mem_shape: tuple[int, int, int], ptr_dim: int, device: torch.device,
                 preallocate: bool = False) -> "ObjectMemory":
        Cm, h, w = mem_shape
        if policy.coarse_after and (h % 2 or w % 2):
            raise ValueError(f"coarse_after needs an even memory grid, got {h}x{w}")
        coarse = (Cm, h // 2, w // 2) if policy.coarse_after else mem_shape

        def store(capacity, shape, dtype=torch.bfloat16, int8=policy.int8):
            return SlotStore.empty(capacity, shape, dtype, device, int8, preallocate)

        return cls(object_id, first_frame, {
            "cond": store(policy.max_cond, mem_shape), "key": store(policy.num_keyframes, coarse),
            "pool": store(policy.retrieval_pool, coarse), "recent": store(policy.fine_recent, mem_shape),
            "recent_coarse": store(policy.num_recent - policy.fine_recent, coarse),
            "cond_ptrs": store(policy.max_cond, (ptr_dim,), torch.float32),  # int8: one scale per vector
            "ptrs": store(num_ptrs, (ptr_dim,), torch.float32),
            "pool_desc": store(policy.retrieval_pool, (Cm,), torch.float32),
        })

    # ---- writing ------------------------------------------------------------------------------------
    def store_cond(self, frame: int, feats: torch.Tensor, ptr: torch.Tensor) -> None:
        slot = self.stores["cond"].slot_for(frame)
        self._put("cond", slot, frame, feats)
        self.stores["cond_ptrs"].put(slot, frame, ptr)
        self.num_cond_stored += 1

    def store_recent(self, frame: int, feats: torch.Tensor, ptr: torch.Tensor) -> None:
        """FIFO: into the slot of the oldest remembered frame, which moves on down the hierarchy."""
        if not self.stores["recent"].capacity:  # memory off: tracked frames are not remembered
            return
        self._push("recent", frame, feats)
        ptrs = self.stores["ptrs"]
        ptrs.put(ptrs.slot_for(frame), frame, ptr)

    def store_keyframe(self, frame: int, feats: torch.Tensor) -> None:
        keys = self.stores["key"]
        self._put("key", keys.slot_for(frame), frame, self._fit(keys, feats))

    def _push(self, name: str, frame: int, feats: torch.Tensor) -> None:
        """Store into a FIFO; what it pushes out goes to the next level: recent -> recent_coarse -> pool."""
        store = self.stores[name]
        slot = store.slot_for(frame)
        old = store.evictee(slot)
        if old >= 0 and old != frame:
            nxt = {"recent": "recent_coarse", "recent_coarse": "pool"}.get(name)
            if nxt == "recent_coarse" and not self.stores[nxt].capacity:
                nxt = "pool"
            if nxt is not None and self.stores[nxt].capacity:
                self._push(nxt, old, store.read(slot))
        self._put(name, slot, frame, self._fit(store, feats))
        if name == "pool":  # its descriptor for retrieval: the memory's mean over the grid (Cm,)
            self.stores["pool_desc"].put(slot, frame, feats.float().mean(dim=(1, 2)))

    def _put(self, name: str, slot: int, frame: int, feats: torch.Tensor) -> None:
        self.stores[name].put(slot, frame, feats)
        self.kv_cache.pop((name, slot), None)

    @staticmethod
    def _fit(store: SlotStore, feats: torch.Tensor) -> torch.Tensor:
        """A memory at the store's resolution: 2x2 average-pooled for a coarse store."""
        if feats.shape[-1] == store.item_shape[-1] * 2:
            return F.avg_pool2d(feats.float()[None], 2)[0].to(feats.dtype)  # (Cm, h/2, w/2)
        return feats

    # ---- reading ------------------------------------------------------------------------------------
    def frames(self, name: str) -> list[int]:
        return self.stores[name].frames

    @property
    def cond_frames(self) -> list[int]:
        return self.frames("cond")

    @property
    def recent_frames(self) -> list[int]:
        return self.frames("recent") + self.frames("recent_coarse")

    @property
    def key_frames(self) -> list[int]:
        return self.frames("key")

    @property
    def ptr_frames(self) -> list[int]:
        return self.frames("ptrs")

    def tokens(self, name: str) -> int:
        """Memory tokens per item of a spatial store."""
        _, h, w = self.stores[name].item_shape
        return h * w

    def capacity(self, policy: MemoryPolicy) -> tuple[int, int]:
        """(spatial tokens, pointers) this bank can put in front of memory attention until its next prompt:
        the static shapes a compiled step pads to."""
        cond = len(self.stores["cond"].live())
        s = self.stores
        tokens = (cond * self.tokens("cond") + s["key"].capacity * self.tokens("key")
                  + policy.retrieval_topk * self.tokens("pool") + s["recent"].capacity * self.tokens("recent")
                  + s["recent_coarse"].capacity * self.tokens("recent_coarse"))
        return tokens, cond + s["ptrs"].capacity

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every stored tensor (what a snapshot carries and state bytes count), by name."""
        return {k: v for name, store in self.stores.items() for k, v in store.tensors(name).items()}

    def read(self, name: str, slot: int) -> torch.Tensor:
        return self.stores[name].read(slot)
