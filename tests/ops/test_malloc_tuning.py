"""fl_broker.ops.malloc_tuning: freed heap memory goes back to the system when asked (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Run in a fresh interpreter: the test suite's own heap would blur what is measured.
PROGRAM = """
from fl_broker.ops.malloc_tuning import limit_heap_growth, release_free_memory

def anon():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) // 1024

limit_heap_growth()
# 64 MiB of 256 KiB buffers (pika's socket read size, under the 1 MiB mmap threshold), each followed by a
# small object that stays alive, so the freed buffers sit in the middle of the heap, not at its top.
blocks, pins = [], []
for _ in range(256):
    blocks.append(b"x" * (256 * 1024))  # written, so resident (bytes(n) could stay untouched zero pages)
    pins.append(bytes(1024))  # over pymalloc's 512 bytes: from the same heap as the buffers
before = anon()
del blocks
freed = anon()
assert release_free_memory()
print(before, freed, anon())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_buffers_are_returned_to_the_system_after_release() -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    before, freed, released = (int(x) for x in out.split())
    assert freed > before - 16  # freed, but still resident: the heap keeps what is not at its top
    assert freed - released > 48  # most of the 64 MiB handed back
