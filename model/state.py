"""TrackerState: everything one stream carries from frame to frame, and its snapshot format."""

import json
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .discovery import DiscoveryState
from .errors import StateError
from .memory_bank import MemoryPolicy, ObjectMemory
from .memory_kv import cache_nbytes
from .memory_store import SlotStore

SNAPSHOT_VERSION = 2  # 2: the bank as SlotStores (memory_store.py)


@dataclass
class TrackerState:
    """One stream: its frame size, the next frame index, and each object's memory bank (insertion order)."""

    height: int  # native frame height
    width: int  # native frame width
    model_name: str  # preset the memories were made with (a snapshot only resumes on the same model)
    policy: MemoryPolicy
    frame_index: int = 0  # index of the next frame the stream expects
    objects: dict[int, ObjectMemory] = field(default_factory=dict)
    discovery: DiscoveryState | None = None  # set: objects are also found automatically (pseudo-labelling)

    @property
    def object_ids(self) -> list[int]:
        return list(self.objects)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored memories (what a snapshot carries); bounded per object by the policy, whatever
        the video's length."""
        return sum(t.numel() * t.element_size() for m in self.objects.values() for t in m.tensors().values())

    @property
    def resident_nbytes(self) -> int:
        """`nbytes` plus the derived key/value caches (memory_kv.py), bounded alike: what the stream holds."""
        return self.nbytes + sum(cache_nbytes(m) for m in self.objects.values())

    def to_bytes(self) -> bytes:
        """A snapshot: safetensors (tensors + JSON metadata), so loading it can never run code."""
        tensors, objects = {}, []
        for m in self.objects.values():
            for name, t in m.tensors().items():
                tensors[f"{m.object_id}.{name}"] = t.detach().cpu().contiguous()
            objects.append({"object_id": m.object_id, "first_frame": m.first_frame,
                            "num_cond_stored": m.num_cond_stored,
                            "stores": {name: {"capacity": st.capacity, "frames": st.frames,
                                              "dtype": str(st.dtype).removeprefix("torch.")}
                                       for name, st in m.stores.items()}})
        meta = {"version": SNAPSHOT_VERSION, "height": self.height, "width": self.width,
                "model_name": self.model_name, "frame_index": self.frame_index, "objects": objects,
                "policy": asdict(self.policy),
                "discovery": None if self.discovery is None else self.discovery.to_dict()}
        return save_tensors(tensors, metadata={"samstream_state": json.dumps(meta)})

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device | str = "cpu") -> "TrackerState":
        try:
            tensors = load_tensors(data)
            meta = json.loads(_read_metadata(data)["samstream_state"])
        except Exception as e:  # any decoding failure is a corrupt snapshot
            raise StateError(f"not a samstream tracker snapshot ({len(data)} bytes): {e}") from e
        if meta.get("version") != SNAPSHOT_VERSION:
            raise StateError(f"snapshot version {meta.get('version')!r}, expected {SNAPSHOT_VERSION}")
        try:
            policy = MemoryPolicy(**meta["policy"])
        except (TypeError, ValueError) as e:
            raise StateError(f"snapshot memory policy {meta['policy']!r} is not valid here: {e}") from e
        state = cls(meta["height"], meta["width"], meta["model_name"], policy, meta["frame_index"])
        if meta.get("discovery") is not None:
            state.discovery = DiscoveryState.from_dict(meta["discovery"])
        for o in meta["objects"]:
            oid = o["object_id"]
            stores = {name: _store(tensors, f"{oid}.{name}", s, device) for name, s in o["stores"].items()}
            state.objects[oid] = ObjectMemory(oid, o["first_frame"], stores, o["num_cond_stored"])
        return state


def _store(tensors: dict, key: str, meta: dict, device) -> SlotStore:
    scales = tensors.get(f"{key}.scales")
    return SlotStore(meta["capacity"], list(meta["frames"]), tensors[key].to(device),
                     None if scales is None else scales.to(device), getattr(torch, meta["dtype"]))


def _read_metadata(data: bytes) -> dict:
    """The safetensors header's __metadata__ (the format: 8-byte little-endian length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"]
