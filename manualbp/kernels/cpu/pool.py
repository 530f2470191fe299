"""Max-pooling on the CPU, compiled by Numba: one (n, c) plane per task.

Derivation: derivations/05-maxpool.md ((P1)-(P6)); readable twins: ``reference.maxpool2d_forward`` and
``reference.maxpool2d_backward`` (``tests/test_kernels.py`` holds them equal).

A dilated window (DH, DW > 1) takes ``_pool_plane_dilated``; ``ceil_mode`` changes only the output size
(P5): the windows clipped to the image are those of (P1) whichever way OH and OW were rounded.
"""
import numpy as np
from numba import njit, prange

from ..reference import pool_out_size

# Max-pooling must see NaNs (torch lets a NaN win the max), so its kernels keep every fast-math flag
# except 'nnan' and 'ninf' (which would let LLVM assume that neither NaN nor infinity ever occurs).
_POOL_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Pooling reads each input once and does almost no arithmetic, so its (n, c) planes are worth sharing
# among the threads from a smaller size than the products: measured with the thread pool awake (as it
# is after a convolution), two threads already halve the time at 16 x 6 x 28 x 28 inputs.
POOL_PARALLEL_MIN_ELEMENTS = 1 << 14



@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_plane(xp, yp, ip, KH, KW, SH, SW, PH, PW):
    """One (n, c) plane: yp = window maxima of xp (P1), ip = flat h*W+w of the first maximum (P3).

    Each window is clipped to the image (the -inf padding can never win), scanned p then q, and a tap
    replaces the best only if strictly greater or NaN (torch's rule), so the first of equal maxima
    keeps its index.  The best starts as the window's first real element, which is what torch reports
    for a window of -inf values.
    """
    H, W = xp.shape
    OH, OW = yp.shape
    for i in range(OH):
        h0 = i * SH - PH
        h1 = min(h0 + KH, H)
        h0 = max(h0, 0)
        for j in range(OW):
            w0 = j * SW - PW
            w1 = min(w0 + KW, W)
            w0 = max(w0, 0)
            best = xp[h0, w0]
            best_at = h0 * W + w0
            for h in range(h0, h1):
                for ww in range(w0, w1):
                    v = xp[h, ww]
                    if v > best or np.isnan(v):
                        best = v
                        best_at = h * W + ww
            yp[i, j] = best
            ip[i, j] = best_at


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_plane_2x2(xp, yp, ip):
    """``_pool_plane`` for the common 2 x 2 window, stride 2, no padding: no clipping, and each window's
    four taps compared in the same order (row by row) with the same rule, written without branches so
    that the loop over j can run on vectors."""
    W = xp.shape[1]
    OH, OW = yp.shape
    for i in range(OH):
        r0 = xp[2 * i]
        r1 = xp[2 * i + 1]
        yrow = yp[i]
        irow = ip[i]
        base = 2 * i * W
        for j in range(OW):
            best = r0[2 * j]
            at = base + 2 * j
            v = r0[2 * j + 1]
            take = (v > best) | np.isnan(v)  # a NaN wins; | rather than `or`: no branch
            best = v if take else best
            at = base + 2 * j + 1 if take else at
            v = r1[2 * j]
            take = (v > best) | np.isnan(v)
            best = v if take else best
            at = base + W + 2 * j if take else at
            v = r1[2 * j + 1]
            take = (v > best) | np.isnan(v)
            best = v if take else best
            at = base + W + 2 * j + 1 if take else at
            yrow[j] = best
            irow[j] = at


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_plane_dilated(xp, yp, ip, KH, KW, SH, SW, PH, PW, DH, DW):
    """``_pool_plane`` for a dilated window, torch's loop: taps every DH rows and DW columns from the
    window's corner, the first real one found by stepping over the padding (P6).  The best starts at
    -inf at that first real tap, so a window of -inf values reports it, as torch does."""
    H, W = xp.shape
    OH, OW = yp.shape
    for i in range(OH):
        h0 = i * SH - PH
        h1 = min(h0 + (KH - 1) * DH + 1, H)
        while h0 < 0:
            h0 += DH
        for j in range(OW):
            w0 = j * SW - PW
            w1 = min(w0 + (KW - 1) * DW + 1, W)
            while w0 < 0:
                w0 += DW
            best = xp.dtype.type(-np.inf)
            best_at = h0 * W + w0
            for h in range(h0, h1, DH):
                for ww in range(w0, w1, DW):
                    v = xp[h, ww]
                    if v > best or np.isnan(v):
                        best = v
                        best_at = h * W + ww
            yp[i, j] = best
            ip[i, j] = best_at


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_any(xp, yp, ip, KH, KW, SH, SW, PH, PW, DH, DW):
    if DH != 1 or DW != 1:
        _pool_plane_dilated(xp, yp, ip, KH, KW, SH, SW, PH, PW, DH, DW)
    elif (KH == 2 and KW == 2 and SH == 2 and SW == 2 and PH == 0 and PW == 0
          and 2 * yp.shape[0] <= xp.shape[0] and 2 * yp.shape[1] <= xp.shape[1]):  # (ceil_mode: not always)
        _pool_plane_2x2(xp, yp, ip)
    else:
        _pool_plane(xp, yp, ip, KH, KW, SH, SW, PH, PW)


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_forward(x, y, idx, KH, KW, SH, SW, PH, PW, DH, DW):
    """y = window maxima (P1), idx = first argmax (P3).  Twin: reference.maxpool2d_forward.

    Threads take (n, c) planes (prange), each written by ``_pool_plane`` (or its 2 x 2 fast path).
    """
    C = x.shape[1]
    for t in prange(x.shape[0] * C):
        n = t // C
        c = t % C
        _pool_any(x[n, c], y[n, c], idx[n, c], KH, KW, SH, SW, PH, PW, DH, DW)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _maxpool2d_forward_serial(x, y, idx, KH, KW, SH, SW, PH, PW, DH, DW):
    """``_maxpool2d_forward`` on the calling thread alone (small inputs)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _pool_any(x[n, c], y[n, c], idx[n, c], KH, KW, SH, SW, PH, PW, DH, DW)


def pool_index_dtype(H, W):
    """The dtype of the argmax positions of an H x W plane: int32 whenever they fit (every plane
    there is, in practice), else int64.

    A position h*W + w counts within one plane, so it never needs 64 bits below 2**31 pixels a plane.
    With int32 positions the 2 x 2 kernel's loop over j runs on vectors (compares and selects on 32-bit
    lanes, beside the 32-bit floats); with int64 ones LLVM leaves it scalar.  Measured at the CIFAR-10
    net's first pooling (64 x 32 x 32 x 32 floats, 2 threads): 1.48 ms -> 0.33 ms.
    """
    return np.int32 if H * W <= np.iinfo(np.int32).max else np.int64


def maxpool2d_forward(x, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False):
    """(y, indices), both (N, C, OH, OW).  Twin of reference.maxpool2d_forward; see its docstring.

    The indices are the reference's values, as ``pool_index_dtype(H, W)`` (int32 for any real plane).
    """
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    KH, KW = int(kernel_size[0]), int(kernel_size[1])
    SH, SW = int(stride[0]), int(stride[1])
    PH, PW = int(padding[0]), int(padding[1])
    DH, DW = int(dilation[0]), int(dilation[1])
    OH = pool_out_size(H, KH, SH, PH, DH, ceil_mode)  # (P5); (P2) for dilation 1, rounding down
    OW = pool_out_size(W, KW, SW, PW, DW, ceil_mode)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    idx = np.empty((N, C, OH, OW), dtype=pool_index_dtype(H, W))
    kernel = _maxpool2d_forward if x.size >= POOL_PARALLEL_MIN_ELEMENTS else _maxpool2d_forward_serial
    kernel(x, y, idx, KH, KW, SH, SW, PH, PW, DH, DW)
    return y, idx


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _unpool_plane(src, at, dst):
    """One (n, c) plane: dst = 0, then dst[at[k]] += src[k] in output order, eq. (P4)."""
    for k in range(dst.shape[0]):
        dst[k] = 0
    for k in range(src.shape[0]):
        dst[at[k]] += src[k]


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_backward(g2, i2, x2):
    """gx[n, c].flat[idx[n,c,i,j]] += gy[n,c,i,j], eq. (P4).  Twin: reference.maxpool2d_backward.

    Arrays come as (N*C, plane) rows.  Threads take (n, c) planes (prange): all indices of a plane
    point into that plane, so each thread scatters only into its own memory, in output order (the
    same order as np.add.at in the twin).
    """
    for t in prange(g2.shape[0]):
        _unpool_plane(g2[t], i2[t], x2[t])


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _maxpool2d_backward_serial(g2, i2, x2):
    """``_maxpool2d_backward`` on the calling thread alone (small inputs)."""
    for t in range(g2.shape[0]):
        _unpool_plane(g2[t], i2[t], x2[t])


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size=None, stride=None, padding=None, dilation=None,
                       ceil_mode=False):
    """dL/dx, (N, C, H, W).  Twin of reference.maxpool2d_backward; see its docstring for shapes."""
    gy = np.ascontiguousarray(grad_y)
    idx = np.ascontiguousarray(indices)  # int32 from maxpool2d_forward (int64 also taken)
    if idx.dtype not in (np.int32, np.int64):
        idx = idx.astype(np.int64)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    N, C = gy.shape[0], gy.shape[1]
    kernel = _maxpool2d_backward if gx.size >= POOL_PARALLEL_MIN_ELEMENTS else _maxpool2d_backward_serial
    P, HW = gy.shape[2] * gy.shape[3], gx.shape[2] * gx.shape[3]
    kernel(gy.reshape(N * C, P), idx.reshape(N * C, P), gx.reshape(N * C, HW))
    return gx

