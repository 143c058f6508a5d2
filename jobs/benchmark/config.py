"""The benchmark's settings: one frozen dataclass, built once at the entry point (cli.py) and passed inward."""

from __future__ import annotations

from dataclasses import dataclass, fields

from model import MemoryPolicy, SamstreamError, get_config

WHICH = ("ref", "ours", "batched", "job", "memory")  # the configurations one run can measure
SYSTEMS = ("reference", "samstream")  # the systems of the memory rows
DEVICES = ("cpu", "cuda")
DTYPES = ("fp32", "bf16")


class BenchmarkConfigError(SamstreamError, ValueError):
    """A benchmark setting out of range; `field` names it (as its --flag), `value` is what was given."""

    def __init__(self, field: str, value, expected: str):
        self.field, self.value = field, value
        super().__init__(f"--{field.replace('_', '-')} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything one benchmark run needs; resolved (no "auto" left) and validated on construction."""

    preset: str = "sam2.1-tiny"  # model preset of both systems
    image_size: int = 512  # model input size; frames are generated at this size, square
    objects: int = 3  # objects prompted on frame 0 (a click, a box, a mask, in turn)
    frames: int = 200  # frames per video of the speed and job runs
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)  # streams stepped together in the batched runs
    actors: tuple[int, ...] = (1, 2)  # actor counts of the segment job runs
    memory_lengths: tuple[int, ...] = (100, 1000, 3000)  # video lengths of the peak-memory rows
    memory_systems: tuple[str, ...] = SYSTEMS  # systems measured at each memory length
    which: tuple[str, ...] = WHICH  # configurations measured, a subset of WHICH
    device: str = "cpu"  # where both systems run: cpu or cuda
    dtype: str = "fp32"  # our autocast: fp32 (none) or bf16
    reference_dtype: str = "fp32"  # the reference's autocast: fp32 (none) or bf16
    compile: bool = False  # torch.compile our hot step (inductor, static shapes)
    # What each object's memory bank keeps in ours (in-process, job and memory rows); the reference always
    # keeps its own (prompted frames + 6 recent), so with another policy the ratios compare different memories.
    policy: MemoryPolicy = MemoryPolicy()
    reference_compile: bool = False  # the reference in its fastest mode (vos_optimized: torch.compile, max-autotune)
    threads: int = 1  # torch threads of every measuring process and job actor (both systems get the same)
    repeats: int = 3  # timed runs per configuration, alternated (the median is reported)
    profile_frames: int = 20  # frames of the separate profiled pass that gives the stage times
    out: str = "out/benchmark"  # output directory (results.parquet, results.md, results.png)
    scratch: str | None = None  # where videos and weights are written (None: a temp dir)
    address: str | None = None  # Ray address of the job runs (None: RAY_ADDRESS, else a local Ray)

    def __post_init__(self) -> None:
        get_config(self.preset, self.image_size)  # unknown presets and bad sizes, with their own errors
        for name, low in (("objects", 1), ("frames", 2), ("threads", 1), ("repeats", 1), ("profile_frames", 1)):
            if getattr(self, name) < low:
                raise BenchmarkConfigError(name, getattr(self, name), f">= {low}")
        if self.objects > 32:
            raise BenchmarkConfigError("objects", self.objects, "<= 32")
        for name in ("batch_sizes", "actors", "memory_lengths"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise BenchmarkConfigError(name, values, "a non-empty list of integers >= 1")
        for name, known in (("which", WHICH), ("memory_systems", SYSTEMS)):
            if not getattr(self, name) or not set(getattr(self, name)) <= set(known):
                raise BenchmarkConfigError(name, getattr(self, name), f"a non-empty subset of {','.join(known)}")
        for name, known in (("device", DEVICES), ("dtype", DTYPES), ("reference_dtype", DTYPES)):
            if getattr(self, name) not in known:
                raise BenchmarkConfigError(name, getattr(self, name), f"one of {', '.join(known)}")

    @property
    def speed(self) -> bool:
        """Whether any in-process speed configuration (ref, ours, batched) runs."""
        return bool({"ref", "ours", "batched"} & set(self.which))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
