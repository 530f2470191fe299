"""The residual block's operations on the GPU: the join y = a + b and the option-A shortcut, one thread per
output element (float32).

Derivation: derivations/18-residual.md ((Q1), (Q3), (Q4)); twins in ``reference_residual.py``.
"""
import numpy as np
from numba import cuda, float32

from .buffers import empty
from .launch import THREADS, blocks, device_f32, flat


def _add(a, b, y):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] = a[i] + b[i]  # (Q1)


def _shortcut_forward(x, y, C, H, W, CO, OH, OW, P):
    """y (N*CO*OH*OW,) flat: y[n, co, i, j] = x[n, co - P, 2i, 2j] inside the kept channels, else 0  (Q3)."""
    t = cuda.grid(1)
    if t < y.shape[0]:
        j = t % OW
        i = (t // OW) % OH
        co = (t // (OW * OH)) % CO
        n = t // (OW * OH * CO)
        c = co - P
        if c < 0 or c >= C:
            y[t] = float32(0.0)
        else:
            y[t] = x[((n * C + c) * H + 2 * i) * W + 2 * j]


def _shortcut_backward(g, gx, C, H, W, CO, OH, OW, P):
    """gx (N*C*H*W,) flat: gx[n, c, h, w] = g[n, c + P, h/2, w/2] where h and w are even, else 0  (Q4)."""
    t = cuda.grid(1)
    if t < gx.shape[0]:
        w = t % W
        h = (t // W) % H
        c = (t // (W * H)) % C
        n = t // (W * H * C)
        if h % 2 == 0 and w % 2 == 0:
            gx[t] = g[((n * CO + c + P) * OH + h // 2) * OW + w // 2]
        else:
            gx[t] = float32(0.0)


residual_add_kernel = cuda.jit(_add)
shortcut_forward_kernel = cuda.jit(_shortcut_forward)
shortcut_backward_kernel = cuda.jit(_shortcut_backward)


def add(a, b):
    """y = a + b (Q1), a new device array.  Twin: ``reference_residual.add``."""
    device_f32(a, "cuda add", "a")
    device_f32(b, "cuda add", "b", shape=a.shape)
    y = empty(a.shape, dtype=np.float32)
    if y.size:
        residual_add_kernel[blocks(y.size), THREADS](flat(a), flat(b), flat(y))
    return y


def shortcut_a_forward(x, pad):
    """(N, C, H, W) -> (N, C + 2*pad, ceil(H/2), ceil(W/2)) (Q3).  Twin: ``reference_residual``."""
    device_f32(x, "cuda shortcut_a_forward", "x", ndim=4)
    n, c, h, w = (int(s) for s in x.shape)
    pad = int(pad)
    co, oh, ow = c + 2 * pad, (h + 1) // 2, (w + 1) // 2
    y = empty((n, co, oh, ow), dtype=np.float32)
    if y.size:
        shortcut_forward_kernel[blocks(y.size), THREADS](flat(x), flat(y), c, h, w, co, oh, ow, pad)
    return y


def shortcut_a_backward(grad_y, x_shape, pad):
    """dL/dx of the option-A shortcut (Q4).  Twin: ``reference_residual.shortcut_a_backward``."""
    n, c, h, w = (int(s) for s in x_shape)
    pad = int(pad)
    co, oh, ow = c + 2 * pad, (h + 1) // 2, (w + 1) // 2
    device_f32(grad_y, "cuda shortcut_a_backward", "grad_y", shape=(n, co, oh, ow))
    gx = empty((n, c, h, w), dtype=np.float32)
    if gx.size:
        shortcut_backward_kernel[blocks(gx.size), THREADS](flat(grad_y), flat(gx), c, h, w, co, oh, ow, pad)
    return gx
