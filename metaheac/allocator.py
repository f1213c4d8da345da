"""Keep freed memory for reuse (glibc).

Training allocates and frees tensors the size of the whole embedding table
(~86 MB at the full Tencent vocabulary). glibc serves blocks that large with
mmap and unmaps them on free, so each one faults in fresh zeroed pages.
Raising the mmap and trim thresholds keeps freed blocks in the heap for the
next use: the same arithmetic, bitwise the same losses. On a full-vocabulary
epoch (docs/experiments.md) it took 107 s to 72 s while each step still made
three table-sized tensors, and 73-75 s to 66-69 s once it made one (system
time 13-14 s to 4-4.5 s). The process then holds its peak memory until it
exits, which a trainer does anyway.
"""
import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_LARGEST = 2 ** 31 - 1  # mallopt takes an int


def keep_freed_memory():
    """Ask glibc to keep freed blocks of any size; True if it agreed. A no-op
    (False) without glibc (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, ctypes.c_int(_LARGEST)) == 1 for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
