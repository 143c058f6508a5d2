"""Peak and current memory of the measuring process: CUDA memory allocated by torch, or the resident set."""

from __future__ import annotations

from pathlib import Path

import torch


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; False when the platform cannot (then a peak includes what came before)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_mb(device: torch.device) -> tuple[float | None, str]:
    """(peak MB, what it is): CUDA memory allocated by torch, or the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return _proc_status_mb("VmHWM"), "rss_peak"


def current_mb(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _proc_status_mb("VmRSS")


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation: the device's, or the host's MemAvailable (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
