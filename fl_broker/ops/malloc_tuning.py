"""Keep a long-running process's memory from creeping up with every large message.

glibc raises its mmap threshold each time a large block is freed, after which model-sized buffers come
from the heap arenas, fragment them and are rarely returned to the system; with one arena per thread
(pika's I/O thread, consumers, the workflow) RSS then grows round after round. Fixing the threshold keeps
every buffer of 1 MiB or more in its own mapping, given back on free. Programs call this at start-up;
elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
M_ARENA_MAX = -8


def limit_heap_growth(mmap_threshold: int = 1024 * 1024, arena_max: int = 2) -> bool:
    """Set glibc's mmap threshold and arena count; True if it was applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_ARENA_MAX, arena_max))
    log.debug("malloc tuning %s", "applied" if applied else "not available")
    return applied
