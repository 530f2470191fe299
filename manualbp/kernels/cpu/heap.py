"""Let a training step reuse the memory of the last one instead of asking the kernel for fresh pages.

Every layer returns a new NumPy array (its output, its gradient), so a step allocates and frees the same
few dozen arrays, from a few KB to several MB, every time.  glibc's malloc serves the large ones with
``mmap`` (above ``M_MMAP_THRESHOLD``, 128 KiB to start) and hands freed memory at the top of the heap back
to the kernel (above ``M_TRIM_THRESHOLD``); the next step then page-faults on every 4 KiB page of its new
arrays, and the kernel zeroes each page first.  On LeNet-5 at batch 64 that was 5-10% of a step
(measured with this file's settings on and off, in alternation).

``keep_freed_memory()`` raises both thresholds (32 MiB for mmap, glibc's largest; 256 MiB kept before
trimming), once per process, when the Numba kernels are first used.  It only changes where malloc puts
memory: a process keeps up to 256 MiB of freed heap for reuse instead of returning it at once.  It does
nothing on other C libraries, when an ``MALLOC_*`` variable is set (the user has chosen), or when
``MANUALBP_KEEP_MALLOC=1`` asks to leave malloc alone.
"""
import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_done = False


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds once; return True if they were set."""
    global _done
    if _done:
        return False
    _done = True
    if not sys.platform.startswith("linux") or os.environ.get("MANUALBP_KEEP_MALLOC") == "1":
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
