"""The residual block's operations on the CPU: the join y = a + b and the option-A shortcut.

Derivation: derivations/18-residual.md ((Q1), (Q3), (Q4)); readable twins in ``reference_residual.py``
(``tests/test_resnet.py`` holds them equal).  Both move memory and do (almost) no arithmetic, so one pass
over the data is all there is to win: one (n, c) plane per task (prange), each task writing only its plane.

Legend: N batch, C channels, H/W input size, OH/OW = ceil(H/2), ceil(W/2), P the pad channels on each side.
"""
import numpy as np
from numba import njit, prange

# Below this many elements the thread pool is not woken.
PARALLEL_MIN_ELEMENTS = 1 << 15


@njit(cache=True, parallel=True)
def _add(a, b, y):
    rows = a.shape[0]
    for r in prange(rows):
        ar, br, yr = a[r], b[r], y[r]
        for i in range(ar.shape[0]):
            yr[i] = ar[i] + br[i]  # (Q1)


@njit(cache=True)
def _add_serial(a, b, y):
    for r in range(a.shape[0]):
        ar, br, yr = a[r], b[r], y[r]
        for i in range(ar.shape[0]):
            yr[i] = ar[i] + br[i]


def add(a, b):
    """y = a + b (Q1), a new array.  Twin of reference_residual.add."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b, dtype=a.dtype)
    y = np.empty_like(a)
    if a.size == 0:
        return y
    rows = a.shape[0] if a.ndim > 1 else 1
    shape2 = (rows, a.size // rows)
    kernel = _add if a.size >= PARALLEL_MIN_ELEMENTS else _add_serial
    kernel(a.reshape(shape2), b.reshape(shape2), y.reshape(shape2))
    return y


@njit(cache=True, parallel=True)
def _shortcut_forward(x, y, P):
    N, C, _H, _W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    CO = y.shape[1]
    for t in prange(N * CO):
        n, co = t // CO, t % CO
        c = co - P
        plane = y[n, co]
        if c < 0 or c >= C:
            plane[:, :] = 0  # a padded channel (Q3)
            continue
        src = x[n, c]
        for i in range(OH):
            for j in range(OW):
                plane[i, j] = src[2 * i, 2 * j]  # (Q3)


@njit(cache=True, parallel=True)
def _shortcut_backward(g, gx, P):
    N, C, _H, _W = gx.shape
    OH, OW = g.shape[2], g.shape[3]
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = gx[n, c]
        plane[:, :] = 0  # pixels the subsampling skipped get no gradient (Q4)
        src = g[n, c + P]
        for i in range(OH):
            for j in range(OW):
                plane[2 * i, 2 * j] = src[i, j]  # (Q4)


def shortcut_a_forward(x, pad):
    """(N, C, H, W) -> (N, C + 2*pad, ceil(H/2), ceil(W/2)), eq. (Q3).  Twin of reference_residual."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = np.empty((n, c + 2 * int(pad), (h + 1) // 2, (w + 1) // 2), dtype=x.dtype)
    if y.size:
        _shortcut_forward(x, y, int(pad))
    return y


def shortcut_a_backward(grad_y, x_shape, pad):
    """dL/dx of the option-A shortcut, eq. (Q4).  Twin of reference_residual.shortcut_a_backward."""
    g = np.ascontiguousarray(grad_y)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=g.dtype)
    if gx.size:
        _shortcut_backward(g, gx, int(pad))
    return gx
