"""Fake CUDA on a CPU-only torch: run model code with tensors on a fake "cuda:0", catch device mixes and
record every host-device synchronisation. Helpers only, no tests.

PyTorch's FakeTensorMode carries shapes, dtypes and devices but no data, so code written for CUDA runs here:
a CPU tensor meeting a CUDA tensor raises FakeTensorDeviceMismatchError (as on a GPU), and anything that needs
a device value on the host has no value to give. `FakeCuda` adds what is missing on a CPU build and records
the synchronisations, each with the repository frames that caused it:

    fc = FakeCuda(allow=[Allow("model/memory_write.py:worth_storing", "selective storing reads presence", True)])
    model = fc.module(load_model("synthetic-tiny"))   # parameters and buffers -> fake cuda:0 (build outside)
    with fc:
        tracker = StreamingTracker(model)              # autocast "auto" -> bf16, as on a GPU
        results = tracker.step_batch(states, frames, prompts)
    assert fc.syncs == [...]                            # Sync events, each with .site, .kind, .stack

What counts as a synchronisation (`Sync.kind`; an unlisted one raises HostSyncError at once, an allowed one
is recorded and gets `Allow.value`, since fake tensors hold no data):
- "read": a device value becomes a Python value: .item(), .tolist(), bool(t), float(t), `if t:`;
- "copy_to_host" / "copy_to_device": a copy between host and device that is not both non_blocking and from/to
  pinned memory (PyTorch runs any other copy with cudaStreamSynchronize, or the driver stages it
  synchronously), including the hidden one of indexing a CUDA tensor with a Python list or a host index tensor;
  `torch.tensor(data, device="cuda")` is such a copy;
- "dynamic_shape": an op whose output shape depends on device data (nonzero, boolean-mask indexing,
  masked_select, unique): the host must read the count. It cannot run fake, so it always raises;
- "synchronize": torch.cuda.synchronize(), Event.synchronize(), Stream.synchronize().
Every copy between host and device, synchronising or not, is also kept in `fc.copies` (Copy events).

What is patched while the context is open, and why (each kept as small as the model needs):
- a no-op CUDA device guard is installed in c10's guard registry: a CPU build has none, and every Python
  binding that opens a device guard (indexing, .item(), .to("cuda"), torch.where with a Python scalar)
  fails before FakeTensorMode sees the op. The guard only sets a current device; it checks nothing, so device
  mixes are still caught by FakeTensorMode. Removed again on exit.
- torch.cuda.is_available() and torch.cuda.is_bf16_supported() return True: torch.autocast("cuda") disables
  itself without them (silently running the GPU path in float32), and device="cuda" defaults read them.
  FakeTensorMode's own "avoid device init" behaviour is kept on (`_FakeCudaMode`): torch.tensor(data,
  device="cuda") is built on the host and copied, which the recorder sees.
- host tensors with a known value (torch.tensor of one number) are "constants" that FakeTensorMode folds by
  running the real op; copying one to CUDA would run a real CUDA copy and fail on this build, so the recorder
  copies a value-less stand-in of the same shape instead. Nothing else is folded differently.
- pin_memory=True allocations, Tensor.pin_memory() and Tensor.is_pinned(): FakeTensorMode has no kernels for
  them; pinned host tensors are remembered (by storage) so copies know their host side is pinned.
- torch.cuda.Event, torch.cuda.current_stream and torch.cuda.synchronize: stand-ins (FakeEvent, FakeStream)
  that record what is called on them in `fc.cuda_calls`; a host wait on one is a "synchronize" Sync.
- the warning on reading a fake tensor's data_ptr() is silenced: model/weight_keys.py keys caches by it.
Nothing is patched for ops FakeTensorMode runs itself: antialiased bicubic/bilinear interpolate and SDPA have
fake kernels (the failures of these noted in ENVIRONMENT.md came from constant inputs, see above).

What cannot be checked under fake tensors: values (numerics, parity, bf16 accuracy), timing and real overlap
of copies with compute, data-dependent control flow (the branch taken is whatever `Allow.value` says),
ops with data-dependent output shapes, CUDA graphs and torch.compile's generated kernels, real pinned-memory
lifetimes, and backward: the autograd engine asks the CUDA runtime (at::accelerator) for the streams of CUDA
tensors, which a CPU build cannot supply. `.numpy()` of a fake host tensor raises (there is no data to view).

Testing a worker's pinned, non-blocking copies (workers/stream_worker.py `_to_host` and its Event): open the
context around the code, then look at `fc.copies` (each Copy has direction, non_blocking, pinned, site) and
`fc.cuda_calls` (("Event.record", site), ("Event.synchronize", site), ...). `torch.empty(..., pin_memory=True)
.copy_(t, non_blocking=True)` and `t.to("cpu", non_blocking=True)` (PyTorch pins that output itself) are async
Copies and no Sync; an Event's synchronize is a Sync of kind "synchronize" (allow it at its site, e.g.
"workers/stream_worker.py:_encode_pending"). Host data copied from the device cannot be read (.numpy() raises):
stop at the copies (call `_start_copy` and check its _Pending), or stub the consumer of the bytes.

Use one FakeCuda per model: fake tensors belong to the mode that made them (`fc.module`, `fc.tensor`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from unittest import mock

import torch
from torch._subclasses.fake_tensor import DynamicOutputShapeException, FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

DEVICE = torch.device("cuda", 0)
REPO = Path(__file__).resolve().parents[1]
_HERE = Path(__file__).resolve()
aten = torch.ops.aten


class HostSyncError(AssertionError):
    """A host-device synchronisation nobody allowed (or one that cannot run fake at all)."""

    def __init__(self, sync: "Sync", detail: str = ""):
        self.sync = sync
        where = "\n    ".join(sync.stack) or "(no repository frame)"
        super().__init__(f"{sync.kind} ({sync.op}) at {sync.site}{': ' + detail if detail else ''}\n    {where}")


@dataclass(frozen=True)
class Allow:
    """A documented synchronisation: allowed where the innermost repository frame is `site`
    ("path/relative/to/repo.py:function"), for `reason`; a read there gets `value` (a bool or number)."""

    site: str
    reason: str
    value: Any = True


@dataclass(frozen=True)
class Sync:
    kind: str  # "read", "copy_to_host", "copy_to_device", "dynamic_shape" or "synchronize"
    op: str  # the aten op or CUDA API that synchronised
    site: str  # innermost repository frame, "model/memory_write.py:worth_storing"
    stack: tuple[str, ...]  # repository frames, outermost first, "model/memory_write.py:30 worth_storing"
    allowed: Allow | None  # the allowance that let it through (None: it raised)


@dataclass(frozen=True)
class Copy:
    direction: str  # "h2d" or "d2h"
    non_blocking: bool
    pinned: bool  # the host side is pinned memory
    op: str  # the aten op
    site: str  # innermost repository frame, as Sync.site
    nbytes: int  # bytes copied (0: the indices of a host-indexed CUDA tensor, size unknown)

    @property
    def is_async(self) -> bool:
        return self.non_blocking and self.pinned


class _FakeCudaMode(FakeTensorMode):
    """FakeTensorMode that keeps building torch.tensor(..., device="cuda") on the host while
    torch.cuda.is_available() is patched to True (its default reads that function)."""

    @property
    def avoid_device_init(self) -> bool:
        return True


# ---- the CUDA device guard a CPU build lacks ------------------------------------------------------------
_DT = torch._C._autograd.DeviceType
_guard_ptr: int | None = None  # address of our registered no-op guard (registered once per process)


class _NoOpCudaGuard(torch._C._acc.DeviceGuard):
    """torch's Python device guard (no-op: device 0, default stream) answering for CUDA."""

    def type_(self):
        return _DT.CUDA


def _registry():
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
    return (ctypes.c_void_p * (_DT.PrivateUse1.value + 1)).in_dll(lib, "_ZN3c104impl26device_guard_impl_registryE")


@contextlib.contextmanager
def _cuda_device_guard():
    """Install the no-op CUDA guard in c10's registry for the duration (torch registers Python guards only
    for PrivateUse1: register there, move the pointer to the CUDA slot, leave PrivateUse1 as it was)."""
    global _guard_ptr
    reg, cuda, pu1 = _registry(), _DT.CUDA.value, _DT.PrivateUse1.value
    if reg[cuda] and reg[cuda] != _guard_ptr:  # a CUDA build: it has a real guard, nothing to do
        yield
        return
    if _guard_ptr is None:
        if reg[pu1]:
            raise RuntimeError("a PrivateUse1 device guard is registered already: cannot borrow its slot")
        guard = _NoOpCudaGuard()
        if not torch._C._acc.register_python_privateuseone_device_guard(guard):  # keeps a reference
            raise RuntimeError("could not register the no-op CUDA device guard")
        _guard_ptr, reg[pu1] = reg[pu1], None
    previous, reg[cuda] = reg[cuda], _guard_ptr
    try:
        yield
    finally:
        reg[cuda] = previous


# ---- CUDA runtime stand-ins --------------------------------------------------------------------------------
class FakeEvent:
    """torch.cuda.Event stand-in: record/wait/query are noted; synchronize is a host wait (a Sync)."""

    def __init__(self, harness: "FakeCuda", *args, **kwargs):
        self._h = harness
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True
        self._h._note("Event.record")

    def wait(self, stream=None):
        self._h._note("Event.wait")

    def query(self) -> bool:
        self._h._note("Event.query")
        return True

    def synchronize(self):
        self._h._note("Event.synchronize")
        self._h._sync("synchronize", "Event.synchronize")


class FakeStream:
    def __init__(self, harness: "FakeCuda"):
        self._h = harness

    def synchronize(self):
        self._h._note("Stream.synchronize")
        self._h._sync("synchronize", "Stream.synchronize")

    def wait_event(self, event):
        self._h._note("Stream.wait_event")

    def record_event(self, event=None):
        event = event or FakeEvent(self._h)
        event.record(self)
        return event


# ---- the recorder ------------------------------------------------------------------------------------------
_READS = {aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default}
_COPIES = {aten._to_copy.default, aten.to.dtype_layout, aten.to.device, aten.to.other, aten.copy_.default}
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._unsafe_index.Tensor,
             aten._index_put_impl_.default}
_PIN_FACTORIES = {aten.empty.memory_format, aten.empty_strided.default, aten.zeros.default, aten.ones.default,
                  aten.full.default, aten.empty_like.default, aten.zeros_like.default}


def _bind(func, args, kwargs) -> dict:
    names = [a.name for a in func._schema.arguments]
    return {**dict(zip(names, args)), **kwargs}


def _device(x) -> torch.device | None:
    return x.device if isinstance(x, torch.Tensor) else None


class _Recorder(TorchDispatchMode):
    """Sees every op before FakeTensorMode: reads, copies, host-indexed CUDA tensors and pinned memory."""

    def __init__(self, harness: "FakeCuda"):
        super().__init__()
        self.h = harness

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        h = self.h
        if func in _READS:
            return h._read(func, args[0])
        if func in _COPIES:
            args, kwargs, pin_output = h._copy(func, args, kwargs)
            if pin_output:
                return h._pin(func(*args, **kwargs))
        elif func in _INDEXING:
            h._host_indices(func, args)
        elif func in _PIN_FACTORIES and kwargs.get("pin_memory"):
            return h._pin(func(*args, **{**kwargs, "pin_memory": False}))
        elif func in (aten.pin_memory.default, aten._pin_memory.default):
            return h._pin(args[0].clone())
        elif func is aten.is_pinned.default:
            return h._is_pinned(args[0])
        try:
            return func(*args, **kwargs)
        except DynamicOutputShapeException as e:
            h._sync("dynamic_shape", str(func), detail="its output shape depends on device data")
            raise HostSyncError(h.syncs[-1], "cannot run under fake tensors") from e


@dataclass
class FakeCuda:
    """The harness: `module`/`tensor` make fake CUDA values, `with fc:` runs code on them, recording."""

    allow: Iterable[Allow] = ()
    syncs: list[Sync] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    cuda_calls: list[tuple[str, str]] = field(default_factory=list)  # (call, site) on Event/Stream stand-ins

    def __post_init__(self):
        self.allow = list(self.allow)
        self.mode = _FakeCudaMode(allow_non_fake_inputs=True)
        self._pinned: set[int] = set()
        self._stack = contextlib.ExitStack()

    # -- making fake values (outside or inside the context) --
    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Replace every parameter and buffer by a value-less fake one on cuda:0, in place (build the module
        first, outside: initialisers that read values cannot run fake)."""
        with self.mode:
            for m in module.modules():
                for name, p in list(m._parameters.items()):
                    if p is not None:
                        fake = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device=DEVICE)
                        m._parameters[name] = torch.nn.Parameter(fake, requires_grad=p.requires_grad)
                for name, b in list(m._buffers.items()):
                    if b is not None:
                        m._buffers[name] = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype, device=DEVICE)
        return module

    def tensor(self, t: torch.Tensor, device: torch.device | str = DEVICE, pinned: bool = False) -> torch.Tensor:
        """A value-less fake of `t`'s shape and dtype on `device` (cuda:0, or "cpu" for host inputs; `pinned`
        marks a host one as pinned memory)."""
        with self.mode:
            fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=torch.device(device))
        return self._pin(fake) if pinned else fake

    # -- the context --
    def __enter__(self) -> "FakeCuda":
        s = self._stack
        s.enter_context(_cuda_device_guard())
        s.enter_context(mock.patch("torch.cuda.is_available", return_value=True))
        s.enter_context(mock.patch("torch.cuda.is_bf16_supported", return_value=True))
        s.enter_context(mock.patch("torch.cuda.Event", lambda *a, **k: FakeEvent(self, *a, **k)))
        s.enter_context(mock.patch("torch.cuda.current_stream", lambda *a, **k: FakeStream(self)))
        s.enter_context(mock.patch("torch.cuda.synchronize", self._synchronize))
        s.enter_context(warnings.catch_warnings())  # model/weight_keys.py keys caches by data_ptr(): 0 when fake
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        s.enter_context(self.mode)
        s.enter_context(_Recorder(self))
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    # -- events --
    def syncs_at(self, site: str) -> list[Sync]:
        return [s for s in self.syncs if s.site == site]

    def _frames(self) -> tuple[str, ...]:
        out = []
        for f in traceback.extract_stack()[:-1]:
            if f.filename.startswith("<"):  # <frozen runpy> and the like
                continue
            path = Path(f.filename).resolve()
            if path == _HERE or not path.is_relative_to(REPO) or ".venv" in path.parts:
                continue
            out.append(f"{path.relative_to(REPO)}:{f.lineno} {f.name}")
        return tuple(out)

    def _site(self, stack: tuple[str, ...]) -> str:
        """The innermost repository function, comprehensions and lambdas named by the function around them."""
        named = [f for f in stack if not f.split(" ", 1)[1].startswith("<")] or stack
        if not named:
            return "?"
        where, name = named[-1].split(" ", 1)
        return f"{where.rsplit(':', 1)[0]}:{name}"

    def _sync(self, kind: str, op: str, detail: str = "") -> Allow:
        stack = self._frames()
        site = self._site(stack)
        allowed = next((a for a in self.allow if a.site == site), None)
        self.syncs.append(Sync(kind, op, site, stack, allowed))
        if allowed is None:
            raise HostSyncError(self.syncs[-1], detail)
        return allowed

    def _note(self, call: str) -> None:
        self.cuda_calls.append((call, self._site(self._frames())))

    def _synchronize(self, device=None) -> None:
        self._note("cuda.synchronize")
        self._sync("synchronize", "torch.cuda.synchronize")

    def _read(self, func, t: torch.Tensor):
        if isinstance(t, FakeTensor) and t.constant is not None:  # a host value known to the mode: no sync
            return t.constant.item()
        if t.device.type == "cpu":  # host data computed from fake values: no sync, but nothing to read either
            stack = self._frames()
            allowed = next((a for a in self.allow if a.site == self._site(stack)), None)
            if allowed is None:
                raise HostSyncError(Sync("read", str(func), self._site(stack), stack, None),
                                    "a host tensor made from fake data has no value (allow its site)")
            return allowed.value
        value = self._sync("read", str(func)).value
        return bool(value) if func is aten.is_nonzero.default else value

    def _copy(self, func, args, kwargs):
        b = _bind(func, args, kwargs)
        src = b.get("src") if func is aten.copy_.default else b.get("self")
        dst = b.get("self") if func is aten.copy_.default else None
        target = _device(dst) or _device(b.get("other")) or b.get("device") or _device(src)
        target, source = torch.device(target), src.device
        if (source.type == "cpu") == (target.type == "cpu"):
            return args, kwargs, False
        h2d = source.type == "cpu"
        non_blocking = bool(b.get("non_blocking", False))
        # t.to("cpu", non_blocking=True) allocates its output in pinned memory (as PyTorch does on CUDA)
        pin_output = not h2d and dst is None and (non_blocking or bool(b.get("pin_memory")))
        host = src if h2d else dst
        pinned = pin_output or (host is not None and self._is_pinned(host))
        copy = Copy("h2d" if h2d else "d2h", non_blocking, pinned, str(func), self._site(self._frames()),
                    src.numel() * src.element_size())
        self.copies.append(copy)
        if not copy.is_async:
            self._sync("copy_to_device" if h2d else "copy_to_host", str(func),
                       "not a non-blocking copy from/to pinned memory: the host waits for the device")
        if h2d and isinstance(src, FakeTensor) and src.constant is not None:
            # A known host value would be folded by running the real copy to CUDA: copy a stand-in instead.
            stand_in = torch.empty_strided(src.shape, src.stride(), dtype=src.dtype, device=src.device)
            args = tuple(stand_in if a is src else a for a in args)
            kwargs = {k: stand_in if v is src else v for k, v in kwargs.items()}
        return args, kwargs, pin_output

    def _host_indices(self, func, args) -> None:
        """Indexing a CUDA tensor with host indices copies them to the device first (blocking)."""
        if args[0].device.type == "cpu":
            return
        indices = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        if any(isinstance(i, torch.Tensor) and i.device.type == "cpu" and i.dim() > 0 for i in indices):
            self.copies.append(Copy("h2d", False, False, str(func), self._site(self._frames()), 0))
            self._sync("copy_to_device", f"{func} (host indices)", "a CUDA tensor indexed with host indices")

    def _pin(self, t: torch.Tensor) -> torch.Tensor:
        self._pinned.add(t.untyped_storage()._cdata)
        return t

    def _is_pinned(self, t: torch.Tensor) -> bool:
        return t.device.type == "cpu" and t.untyped_storage()._cdata in self._pinned
