"""Average pooling and adaptive (average and max) pooling on the CPU, compiled by Numba: one (n, c) plane
per task.

Derivation: derivations/16-average-pooling.md (V1)-(V9); the output size is (P5) of
derivations/05-maxpool.md.  Readable twins in ``reference_pooling_avg.py`` (``tests/test_pooling_avg.py``
holds them equal).

Threads take (n, c) planes (prange over N*C); a backward scatters each output's share into its own plane
only, in output order, so every sum runs in the same order whatever the thread count.  Sums are taken
in float64 and rounded once.  Below ``POOL_PARALLEL_MIN_ELEMENTS`` the serial twin runs instead.
"""
import numpy as np
from numba import njit, prange

from ..reference import pool_out_size
from .pool import _POOL_FASTMATH, POOL_PARALLEL_MIN_ELEMENTS, maxpool2d_backward


@njit(cache=True)
def _avg_window(i, size, k, s, p, include_pad):
    """(start, end, count) of window i along one axis, as ``reference.avgpool_window``  (V2)."""
    start = i * s - p
    end = min(start + k, size + p)
    padded = end - start
    start = max(start, 0)
    end = min(end, size)
    return start, end, padded if include_pad else end - start


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _avg_plane(xp, yp, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    H, W = xp.shape
    OH, OW = yp.shape
    for i in range(OH):
        h0, h1, ch = _avg_window(i, H, KH, SH, PH, include_pad)
        for j in range(OW):
            w0, w1, cw = _avg_window(j, W, KW, SW, PW, include_pad)
            total = 0.0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total += xp[h, w]
            yp[i, j] = total / (divisor if divisor != 0 else ch * cw)  # (V1), (V2)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _avg_plane_backward(gp, xp, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    H, W = xp.shape
    OH, OW = gp.shape
    acc = np.zeros((H, W))  # float64
    for i in range(OH):
        h0, h1, ch = _avg_window(i, H, KH, SH, PH, include_pad)
        for j in range(OW):
            w0, w1, cw = _avg_window(j, W, KW, SW, PW, include_pad)
            share = gp[i, j] / (divisor if divisor != 0 else ch * cw)  # (V4)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    acc[h, w] += share
    for h in range(H):
        for w in range(W):
            xp[h, w] = acc[h, w]


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _avgpool2d_forward(x, y, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    C = x.shape[1]
    for t in prange(x.shape[0] * C):
        _avg_plane(x[t // C, t % C], y[t // C, t % C], KH, KW, SH, SW, PH, PW, include_pad, divisor)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _avgpool2d_forward_serial(x, y, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    C = x.shape[1]
    for t in range(x.shape[0] * C):
        _avg_plane(x[t // C, t % C], y[t // C, t % C], KH, KW, SH, SW, PH, PW, include_pad, divisor)


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _avgpool2d_backward(g, gx, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    C = g.shape[1]
    for t in prange(g.shape[0] * C):
        _avg_plane_backward(g[t // C, t % C], gx[t // C, t % C], KH, KW, SH, SW, PH, PW, include_pad, divisor)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _avgpool2d_backward_serial(g, gx, KH, KW, SH, SW, PH, PW, include_pad, divisor):
    C = g.shape[1]
    for t in range(g.shape[0] * C):
        _avg_plane_backward(g[t // C, t % C], gx[t // C, t % C], KH, KW, SH, SW, PH, PW, include_pad, divisor)


def _geometry(kernel_size, stride, padding, count_include_pad, divisor_override):
    return (int(kernel_size[0]), int(kernel_size[1]), int(stride[0]), int(stride[1]), int(padding[0]),
            int(padding[1]), bool(count_include_pad), int(divisor_override or 0))


def avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """(V1), (V2); OH, OW by (P5).  Twin: reference.avgpool2d_forward."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    geom = _geometry(kernel_size, stride, padding, count_include_pad, divisor_override)
    OH = pool_out_size(H, geom[0], geom[2], geom[4], 1, ceil_mode)  # (P5)
    OW = pool_out_size(W, geom[1], geom[3], geom[5], 1, ceil_mode)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    kernel = _avgpool2d_forward if x.size >= POOL_PARALLEL_MIN_ELEMENTS else _avgpool2d_forward_serial
    kernel(x, y, *geom)
    return y


def avgpool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    """(V4).  Twin: reference.avgpool2d_backward."""
    g = np.ascontiguousarray(grad_y)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=g.dtype)
    kernel = _avgpool2d_backward if gx.size >= POOL_PARALLEL_MIN_ELEMENTS else _avgpool2d_backward_serial
    kernel(g, gx, *_geometry(kernel_size, stride, padding, count_include_pad, divisor_override))
    return gx


# --- adaptive pooling ------------------------------------------------------------------------------------

@njit(cache=True)
def _adaptive(i, size, out):
    """(start, end) = (floor(i*size/out), ceil((i+1)*size/out))  (V5)."""
    return (i * size) // out, ((i + 1) * size + out - 1) // out


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _adaptive_plane(xp, yp, ip, want_max):
    """One plane: the mean (V6) or the first maximum and its index (V8) of every adaptive window."""
    H, W = xp.shape
    OH, OW = yp.shape
    for i in range(OH):
        h0, h1 = _adaptive(i, H, OH)
        for j in range(OW):
            w0, w1 = _adaptive(j, W, OW)
            if want_max:
                best = xp.dtype.type(-np.inf)
                at = h0 * W + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = xp[h, w]
                        if v > best or np.isnan(v):  # (V8): a NaN wins, ties keep the first
                            best = v
                            at = h * W + w
                yp[i, j] = best
                ip[i, j] = at
            else:
                total = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        total += xp[h, w]
                yp[i, j] = total / ((h1 - h0) * (w1 - w0))  # (V6)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _adaptive_avg_plane_backward(gp, xp):
    H, W = xp.shape
    OH, OW = gp.shape
    acc = np.zeros((H, W))
    for i in range(OH):
        h0, h1 = _adaptive(i, H, OH)
        for j in range(OW):
            w0, w1 = _adaptive(j, W, OW)
            share = gp[i, j] / ((h1 - h0) * (w1 - w0))  # (V7)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    acc[h, w] += share
    for h in range(H):
        for w in range(W):
            xp[h, w] = acc[h, w]


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _adaptive_forward(x, y, idx, want_max):
    C = x.shape[1]
    for t in prange(x.shape[0] * C):
        _adaptive_plane(x[t // C, t % C], y[t // C, t % C], idx[t // C, t % C], want_max)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _adaptive_forward_serial(x, y, idx, want_max):
    C = x.shape[1]
    for t in range(x.shape[0] * C):
        _adaptive_plane(x[t // C, t % C], y[t // C, t % C], idx[t // C, t % C], want_max)


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _adaptive_avg_backward(g, gx):
    C = g.shape[1]
    for t in prange(g.shape[0] * C):
        _adaptive_avg_plane_backward(g[t // C, t % C], gx[t // C, t % C])


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _adaptive_avg_backward_serial(g, gx):
    C = g.shape[1]
    for t in range(g.shape[0] * C):
        _adaptive_avg_plane_backward(g[t // C, t % C], gx[t // C, t % C])


def _adaptive_forward_op(x, output_size, want_max):
    x = np.ascontiguousarray(x)
    N, C = x.shape[0], x.shape[1]
    y = np.empty((N, C, int(output_size[0]), int(output_size[1])), dtype=x.dtype)
    idx = np.zeros(y.shape if want_max else (N, C, 0, 0), dtype=np.int64)
    kernel = _adaptive_forward if x.size >= POOL_PARALLEL_MIN_ELEMENTS else _adaptive_forward_serial
    kernel(x, y, idx, want_max)
    return y, idx


def adaptive_avgpool2d_forward(x, output_size):
    """(V5), (V6).  Twin: reference.adaptive_avgpool2d_forward."""
    return _adaptive_forward_op(x, output_size, False)[0]


def adaptive_avgpool2d_backward(grad_y, x_shape):
    """(V7).  Twin: reference.adaptive_avgpool2d_backward."""
    g = np.ascontiguousarray(grad_y)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=g.dtype)
    kernel = _adaptive_avg_backward if gx.size >= POOL_PARALLEL_MIN_ELEMENTS else _adaptive_avg_backward_serial
    kernel(g, gx)
    return gx


def adaptive_maxpool2d_forward(x, output_size):
    """(y, int64 indices): (V5), (V8).  Twin: reference.adaptive_maxpool2d_forward."""
    return _adaptive_forward_op(x, output_size, True)


def adaptive_maxpool2d_backward(grad_y, indices, x_shape):
    """(V9): the scatter of max-pooling's backward (``pool.maxpool2d_backward``, (P4)), which needs only the
    indices.  Twin: reference.adaptive_maxpool2d_backward."""
    return maxpool2d_backward(grad_y, indices, x_shape)


__all__ = ["adaptive_avgpool2d_backward", "adaptive_avgpool2d_forward", "adaptive_maxpool2d_backward",
           "adaptive_maxpool2d_forward", "avgpool2d_backward", "avgpool2d_forward"]
