"""What the driver sends a worker and what comes back: small, picklable records."""

from dataclasses import dataclass, field

from model import MemoryPolicy, Prompt
from model.discovery import DiscoveryConfig

from .video_source import VideoInfo


@dataclass(frozen=True)
class ModelSpec:
    preset: str  # model preset name
    checkpoint: str | None = None  # fsspec URL of the weights; None = random (seeded) weights
    image_size: int | None = None  # override of the preset's image size
    policy: MemoryPolicy = MemoryPolicy()  # what each object's memory bank keeps
    fill_hole_area: int | None = None  # None = the preset's
    dtype: str = "auto"  # autocast: "auto" (bf16 on CUDA, float32 on CPU), "fp32" or "bf16"
    compile: bool = False  # torch.compile the hot step (static shapes; pays off on long videos on GPUs)
    memory_kv_cache: bool = True  # project each stored memory for memory attention once (faster, more memory)
    discovery: DiscoveryConfig = DiscoveryConfig()  # how streams that discover objects find and end them


@dataclass(frozen=True)
class ChunkTask:
    """Frames [start, stop) of one stream, with the prompts that arrive on them."""

    video_id: str
    stream: int  # stream number (the unit of state)
    chunk: int  # chunk number within the stream; chunk 0 starts a new stream
    start: int
    stop: int
    info: VideoInfo
    prompts: tuple[tuple[int, Prompt], ...] = ()  # (frame index, prompt), frames within [start, stop)
    # Pseudo-labelling (None / defaults: prompted tracking, every row goes to the part):
    discover_from: int | None = None  # objects are also discovered, numbered from this id
    rows: tuple[int, int] | None = None  # frames [a, b) whose rows this stream writes (its segment's own)
    overlaps: tuple[tuple[int, int], ...] = ()  # frames whose rows also go to the overlap file, for stitching
    segment: int = 0  # the stream's segment within its video
    local_ids: bool = False  # its ids are the segment's own until stitched (a video of several segments)


@dataclass
class ChunkReport:
    stream: int
    chunk: int
    ok: bool
    error: str | None = None  # why the chunk failed, one line naming the cause
    retryable: bool = False  # a storage failure: worth running again from the last snapshot
    bad_snapshot: bool = False  # the snapshot it started from cannot be resumed: start from an earlier one
    frames: int = 0
    rows: int = 0
    objects: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # decode / model / encode / write / snapshot
    peak_rss_mb: float = 0.0  # the actor process's peak resident memory so far
