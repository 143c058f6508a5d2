"""TrackerState: everything one stream carries from frame to frame, and its snapshot format."""

import json
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .discovery import DiscoveryState
from .errors import StateError
from .memory_bank import MemoryPolicy, ObjectMemory

SNAPSHOT_VERSION = 1


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
        """Bytes held in tensors; fixed per object by the policy, whatever the video's length."""
        return sum(t.numel() * t.element_size() for m in self.objects.values() for t in m.tensors().values())

    def to_bytes(self) -> bytes:
        """A snapshot: safetensors (tensors + JSON metadata), so loading it can never run code."""
        tensors, objects = {}, []
        for m in self.objects.values():
            for name, t in m.tensors().items():
                tensors[f"{m.object_id}.{name}"] = t.detach().cpu().contiguous()
            objects.append({"object_id": m.object_id, "first_frame": m.first_frame, "cond_frames": m.cond_frames,
                            "recent_frames": m.recent_frames, "ptr_frames": m.ptr_frames,
                            "num_cond_stored": m.num_cond_stored, "key_frames": m.key_frames})
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
        state = cls(meta["height"], meta["width"], meta["model_name"], MemoryPolicy(**meta["policy"]),
                    meta["frame_index"])
        if meta.get("discovery") is not None:
            state.discovery = DiscoveryState.from_dict(meta["discovery"])
        for o in meta["objects"]:
            oid = o["object_id"]
            t = {k: tensors[f"{oid}.{k}"].to(device) for k in ("cond_feats", "cond_ptrs", "recent_feats", "ptrs")}
            key_frames = o.get("key_frames", [])  # snapshots before keyframes existed have none
            keys = (tensors[f"{oid}.key_feats"].to(device) if key_frames
                    else t["cond_feats"].new_zeros((0, *t["cond_feats"].shape[1:])))
            state.objects[oid] = ObjectMemory(oid, o["first_frame"], t["cond_feats"], t["cond_ptrs"],
                                              o["cond_frames"], t["recent_feats"], o["recent_frames"], t["ptrs"],
                                              o["ptr_frames"], o["num_cond_stored"], keys, key_frames)
        return state


def _read_metadata(data: bytes) -> dict:
    """The safetensors header's __metadata__ (the format: 8-byte little-endian length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"]
