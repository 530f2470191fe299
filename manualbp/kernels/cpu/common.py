"""What the CPU kernel wrappers share: cached workspaces, the thread count for a job, rounding up.

The convolutions' unrolled or padded images and the matrix product's panels are large, needed at every
step with the same shapes, so they are allocated once and kept (``workspace``).  ``workers`` decides
how many threads a job gets from its size alone, so the choice never depends on timing.
"""
import threading

import numba
import numpy as np

from .gemm_dot import PARALLEL_MIN_MACS


def _ints(pair):
    return int(pair[0]), int(pair[1])


# Workspaces: the unrolled images (col, dcol) of the convolutions are large (R x P floats per worker)
# and needed at every step with the same shapes, so they are allocated once and kept here, keyed by
# shape, dtype and calling thread (two Python threads never share one).  At most a few per layer shape.
_workspaces = {}


def workspace(name, shape, dtype):
    """A cached, uninitialised array of this shape and dtype for the calling thread (``name``: its use)."""
    key = (name, tuple(shape), np.dtype(dtype).str, threading.get_ident())
    ws = _workspaces.get(key)
    if ws is None:
        if len(_workspaces) >= 64:  # many different shapes: forget the old ones
            _workspaces.clear()
        ws = _workspaces[key] = np.empty(shape, dtype=dtype)
    return ws


def workers(n_items, macs):
    """How many workers a kernel over ``n_items`` images gets: 1 (serial) for small work, else the threads."""
    if macs < PARALLEL_MIN_MACS or n_items < 2:
        return 1
    return max(1, min(numba.get_num_threads(), n_items))


def _up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def _up4(n):
    return _up(n, 4)
