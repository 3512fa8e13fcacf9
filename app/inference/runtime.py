"""Process-level tuning the server applies at start-up."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8        # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3


def mallopt(parameter: int, value: int, what: str) -> bool:
    """glibc's mallopt; a no-op (False) where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(parameter, value))
    except (OSError, AttributeError, TypeError):
        log.info("mallopt is not available: %s left as it is", what)
        return False


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas. Each request thread that allocates NumPy arrays would
    otherwise get an arena of its own, and freed memory stays resident in it: under 20
    concurrent clients the server grew from ~100 MB to ~700 MB; with 2 arenas it stayed
    under 270 MB (bench/http.py)."""
    return mallopt(M_ARENA_MAX, arenas, "the malloc arenas")


def fix_mmap_threshold(size: int) -> bool:
    """Allocations of `size` bytes and more get pages of their own, returned to the system
    when freed. glibc otherwise raises the threshold to the largest block freed (up to
    32 MB), after which a trace's arrays come from the heap and its fragments stay resident:
    under the 20-client load (bench/http.py, 8 requests a pass) the peak was 319 MB with
    8 MB fixed, 278 with 4 MB and 285 with 1 MB, which made a lone 1,000-character trace 5 %
    slower with its page faults."""
    return mallopt(M_MMAP_THRESHOLD, size, "the mmap threshold")


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim): after a burst of
    requests the arenas keep what the burst freed, and the server's resident size would
    stay at its peak. A no-op (False) where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0))
    except (OSError, AttributeError, TypeError):
        return False
