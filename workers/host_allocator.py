"""Keep the frame loop's host memory in the process: glibc malloc settings for tensor-sized blocks.

A CPU frame at 512 px allocates and frees dozens of activations of 1-30 MB. glibc serves blocks above its mmap
threshold (128 KiB, raised on the fly up to 32 MiB) with fresh mmaps and unmaps them on free, so the next frame
faults in and zeroes the same pages again: ~10% of a frame at 512 px under bf16, more in single ops (the memory
attention's FFN: 22 ms -> 10 ms). With a fixed 32 MiB threshold and a high trim threshold, freed blocks stay in the
heap and are reused. The process keeps up to `trim_threshold` of freed memory instead of returning it at once.
"""

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def tune_host_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Apply the settings to this process; False where there is no glibc (macOS, musl), which changes nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
