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


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_heap_growth(mmap_threshold: int = 1024 * 1024, arena_max: int = 2) -> bool:
    """Set glibc's mmap threshold and arena count; True if it was applied."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_ARENA_MAX, arena_max))
    log.debug("malloc tuning %s", "applied" if applied else "not available")
    return applied


def release_free_memory() -> bool:
    """Give the system back the free pages inside the heap arenas (glibc's `malloc_trim`); True if done.

    Buffers under the mmap threshold (pika's socket reads of 256 KiB, while a model-sized body arrives
    faster than it is taken apart) are freed into the arenas, not to the system: after every large message
    the process would keep that much more resident, and its next peak would start from there. Costs well
    under a millisecond; called after each model-sized task."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
