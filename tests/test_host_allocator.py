"""The host allocator settings keep freed tensor memory in the process for the next frame."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys, torch
from workers.host_allocator import tune_host_allocator
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096
if sys.argv[1] == 'tuned':
    assert tune_host_allocator()
t = torch.ones(6 << 20)  # 24 MiB, written
held = rss()
del t
print(held - rss())  # what freeing it gave back to the OS
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activation_memory_stays_in_the_process():
    def returned(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True)
        return int(out.stdout.split()[-1])

    assert returned("default") > 20 << 20  # glibc unmaps a block this size on free: the next frame faults it in
    assert returned("tuned") < 4 << 20  # kept in the heap for reuse
