"""Host data to the device, and row selection, without making the host wait for the device.

On CUDA a plain host-to-device copy (`torch.tensor(data, device="cuda")`, `t.to("cuda")`, indexing a CUDA
tensor with a Python list) runs as cudaMemcpy + cudaStreamSynchronize: the host waits until every kernel
queued before it has finished, so the frame loop could not run ahead of the GPU. A copy from pinned memory
with non_blocking=True is queued like a kernel instead (the caching host allocator keeps the pinned block
until the copy is done). On the CPU both helpers return exactly what the plain forms return.
"""

from typing import Any, Sequence

import torch


def to_device(data: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host data (nested lists, numpy, a host tensor) as a tensor on `device`; to CUDA through pinned memory
    and a non-blocking copy. On the host no copy is made where torch.as_tensor makes none."""
    host = torch.as_tensor(data, dtype=dtype, device="cpu" if not torch.is_tensor(data) else None)
    if device.type != "cuda" or host.device.type != "cpu":
        return host.to(device)
    if not host.is_pinned():
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def take_rows(x: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """x[rows] for a list of row indices: a run of consecutive rows is a view (no copy at all), any other list
    gathers with its indices uploaded by `to_device`."""
    rows = list(rows)
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return x[rows[0]:rows[0] + len(rows)]
    return x[to_device(rows, x.device, torch.long)]
