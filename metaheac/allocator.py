"""Keep freed memory for reuse (glibc).

Each meta-step allocates and frees tensors the size of the whole embedding
table (its dense gradient, weight decay, Adam's temporaries: ~86 MB each at
the full Tencent vocabulary). glibc serves blocks that large with mmap and
unmaps them on free, so every step faults in fresh zeroed pages: 18M page
faults and 36 s of system time in a 100 s epoch. Raising the mmap and trim
thresholds keeps freed blocks in the heap for the next step: the same
arithmetic, bitwise the same losses, 1.5x faster per meta-step
(bench/meta_step.py, docs/experiments.md). The process then holds its peak
memory until it exits, which a trainer does anyway.
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
