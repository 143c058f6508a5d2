"""What a segment run is asked to do, typed: built from the command line in jobs/, read everywhere else."""

from dataclasses import asdict, dataclass

from model.memory_policy_spec import policy_spec
from workers.tasks import ModelSpec


@dataclass(frozen=True)
class PseudoLabelConfig:
    """What pseudo-labelling adds to a run (discovery itself is configured in ModelSpec.discovery)."""

    segment_frames: int = 600  # a longer video is cut into segments tracked in parallel
    overlap: int = 32  # frames neighbouring segments share, for stitching
    stitch_iou: float = 0.5  # the least mean mask IoU over an overlap for two tracks to be one object

    def __post_init__(self):
        if not 1 <= self.overlap < self.segment_frames:
            raise ValueError(f"overlap must be in [1, segment_frames - 1] = [1, {self.segment_frames - 1}], "
                             f"got {self.overlap}")
        if not 0.0 <= self.stitch_iou <= 1.0:
            raise ValueError(f"stitch_iou must be in [0, 1], got {self.stitch_iou}")


@dataclass(frozen=True)
class RunConfig:
    out: str  # output directory, any fsspec URL
    model: ModelSpec  # preset, weights, memory policy, dtype
    chunk_frames: int = 64  # frames per chunk: the unit of work, of part files and of snapshots
    actors: int | None = None  # None: one per GPU, else one per threads_per_actor CPUs
    streams_per_actor: int | None = None  # None: 4 with GPUs, 1 on CPU
    threads_per_actor: int = 1  # torch threads of each actor (fixed, so results do not depend on the pool)
    max_retries: int = 3  # failed attempts of one chunk (storage errors, dead actors) before its video fails
    retry_backoff_s: float = 1.0  # wait before retry n: backoff * 2**(n-1), capped at 30 s
    claim_timeout_s: float = 60.0  # a claim without a heartbeat for this long belongs to a dead driver
    address: str | None = None  # Ray address; None: RAY_ADDRESS, else a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray started by the run
    num_gpus: int | None = None  # GPUs of a local Ray (may be logical)
    progress: bool = True  # tqdm progress bar
    storage_options: dict | None = None  # fsspec options (endpoint, credentials); never written or printed
    pseudo_label: PseudoLabelConfig | None = None  # set: objects are discovered, long videos cut and stitched

    @property
    def job(self) -> str:
        return "segment" if self.pseudo_label is None else "pseudo_label"

    def layout(self) -> dict:
        """What part names depend on: an output is resumed only with the same (_plan.json)."""
        d = {"chunk_frames": self.chunk_frames}
        if self.pseudo_label is not None:
            d |= {"job": "pseudo_label", "segment_frames": self.pseudo_label.segment_frames,
                  "overlap": self.pseudo_label.overlap}
        return d

    def makers(self, weights_sha256: str | None) -> dict:
        """What the masks are made by: an output is resumed only with the same (_plan.json), so that all its
        parts (and the snapshots they resume from) come from one model and memory policy. Weights by content,
        not URL: a job's working directory (the embedded weights' home) moves between submissions."""
        m = self.model
        out = {"preset": m.preset, "weights_sha256": weights_sha256 or "random (seeded)",
               "image_size": m.image_size or "the preset's", "memory_policy": policy_spec(m.policy)}
        if self.pseudo_label is not None:  # what discovers the objects (named as jobs.pseudo_label's flags)
            d = asdict(m.discovery)
            auto = d.pop("auto_masks")
            auto.pop("points_per_batch")  # bounds the decoder's memory, not the result
            out |= d | auto
        return out

    def public(self) -> dict:
        """The config as recorded in _run.json: without storage options."""
        d = asdict(self)
        d.pop("storage_options")
        return d

    def backoff(self, attempt: int) -> float:
        return min(self.retry_backoff_s * 2 ** max(attempt - 1, 0), 30.0)
