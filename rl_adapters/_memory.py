"""Keep the memory an update frees for the next one (glibc's malloc only).

An update's NumPy temporaries are activations and their derivatives, 0.5-1 MiB each for
batches of 1024-2048 rows and 64 units. glibc serves blocks that large with ``mmap`` and
gives them back on ``free`` (or trims them off the top of its heap), so every loss
evaluation and Fisher product maps the same pages again and faults each of them in, zeroed:
about 480 page faults and a third of the time of a CartPole critic evaluation (1.87 against
1.27 ms, ``docs/benchmarks/learning.md``). Raising the mmap and trim thresholds keeps freed
blocks in the heap, where the next evaluation reuses them. The arithmetic is the same, so
every bit of a run is; the peak memory is what an update needs anyway, and it stays with the
process until it exits instead of going back and forth.

``mallopt`` is process-wide and has no way back to glibc's own adaptive thresholds, so
:func:`keep_freed_memory` is called once, by :meth:`rl_adapters.TRPO.learn`; elsewhere than
glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap (glibc's upper limit on 64-bit: 32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap beyond this goes back to the OS.
TRIM_THRESHOLD = 256 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True if they are set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such symbol)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
