"""Which stored memories one object attends to at one frame: host metadata only, never a device read."""

from dataclasses import dataclass

from .memory_bank import ObjectMemory


@dataclass(frozen=True)
class MemoryRef:
    """One stored memory in front of memory attention."""

    store: str  # the bank's SlotStore: "cond", "key", "pool", "recent", "recent_coarse" ("cond_ptrs", "ptrs")
    slot: int
    age: int  # frames since the memory's frame
    # temporal position: the age (the reference), or the rank 1, 2, .. of remembered frames (selective recent
    # frames); 0 for prompted frames, which have their own encoding
    order: int


@dataclass(frozen=True)
class MemoryView:
    spatial: list[MemoryRef]  # prompted frames (oldest first), keyframes, retrieved, recent (newest first)
    ptrs: list[MemoryRef]  # prompted frames' pointers in the past, then the recent ones (newest first)

    @property
    def num_spatial(self) -> int:
        return len(self.spatial)

    @property
    def num_ptrs(self) -> int:
        return len(self.ptrs)

    def of(self, store: str) -> list[MemoryRef]:
        return [r for r in self.spatial + self.ptrs if r.store == store]


def select_memories(mem: ObjectMemory, frame: int, selective: bool = False,
                    retrieved: list[int] = ()) -> MemoryView:
    """The reference's choice: every kept prompted frame, tracked frames t-1..t-N and pointers t-1..t-P. With
    selective storing: every remembered tracked frame and pointer before t (the N and P newest stored).
    Keyframes and `retrieved` pool slots come on top, but for frames already among the recent ones."""
    # Slots in storage order keep the attention sums in the same order on every run.
    cond = sorted(mem.stores["cond"].live(), key=mem.cond_frames.__getitem__)
    ring = [(n, s, f) for n in ("recent", "recent_coarse") for s, f in enumerate(mem.frames(n)) if f >= 0]
    ptr_ring = [("ptrs", s, f) for s, f in enumerate(mem.ptr_frames) if f >= 0]
    pick = _newest if selective else _last_frames
    recent, ptrs = pick(ring, frame, mem.stores["recent"].capacity + mem.stores["recent_coarse"].capacity), \
        pick(ptr_ring, frame, mem.stores["ptrs"].capacity)
    seen = {frame - r.age for r in recent}
    keys = [r for r in _newest([("key", s, f) for s, f in enumerate(mem.key_frames) if f >= 0], frame)
            if frame - r.age not in seen]
    seen |= {frame - r.age for r in keys}
    pool = [MemoryRef("pool", s, frame - mem.frames("pool")[s], frame - mem.frames("pool")[s]) for s in retrieved
            if 0 <= mem.frames("pool")[s] < frame and mem.frames("pool")[s] not in seen]
    spatial = [MemoryRef("cond", s, frame - mem.cond_frames[s], 0) for s in cond] + keys + pool + (
        [MemoryRef(r.store, r.slot, r.age, i + 1) for i, r in enumerate(recent)] if selective else recent)
    past_cond = [MemoryRef("cond_ptrs", s, frame - mem.cond_frames[s], 0) for s in cond
                 if mem.cond_frames[s] <= frame]
    return MemoryView(spatial, past_cond + ptrs)


def retrieval_candidates(mem: ObjectMemory, frame: int, selective: bool = False) -> list[int]:
    """Pool slots a frame may retrieve: stored before it and not attended already as a recent or key frame."""
    view = select_memories(mem, frame, selective)
    seen = {frame - r.age for r in view.spatial}
    return [s for s, f in enumerate(mem.frames("pool")) if 0 <= f < frame and f not in seen]


def _last_frames(items: list[tuple[str, int, int]], frame: int, n: int) -> list[MemoryRef]:
    """The items holding exactly frames t-1 .. t-n, newest first."""
    by_frame = {f: (name, s) for name, s, f in items}
    return [MemoryRef(*by_frame[frame - d], d, d) for d in range(1, min(n, frame) + 1) if frame - d in by_frame]


def _newest(items: list[tuple[str, int, int]], frame: int, n: int | None = None) -> list[MemoryRef]:
    """Every item holding a frame before t, newest first."""
    refs = sorted((MemoryRef(name, s, frame - f, frame - f) for name, s, f in items if f < frame),
                  key=lambda r: r.age)
    return refs if n is None else refs[:n]
