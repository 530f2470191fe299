"""The kernels on the CPU, compiled by Numba: the public wrappers, and max-pooling.

Derivations: derivations/03-linear.md (matmul), derivations/04-conv2d.md (convolution),
derivations/05-maxpool.md (max-pooling).  Equation labels (L*), (K*), (P*) are listed at the top of
``reference.py``, whose functions are the readable twins of the ones here: same names, same
signatures, same results (``tests/test_kernels.py`` holds them equal).  The matrix-product kernels live
in ``cpu_gemm.py``, the convolution kernels in ``cpu_conv.py``.

Each public function is a thin Python wrapper: it makes the arrays C-contiguous, allocates the output
and passes plain ints, so each kernel compiles exactly one specialisation per dtype (float32 and
float64) and caches it on disk.  The kernels themselves never check anything: the layers validated
shapes and dtypes before calling here, and a Numba kernel indexing out of bounds corrupts memory
rather than raising.

Parallelism: ``prange`` only over loops where each iteration writes its own outputs (matmul blocks,
conv images or (n, c) planes, grad-weight column blocks, pooling (n, c) planes).  No float is ever
summed across threads, so results are bit-identical whatever NUMBA_NUM_THREADS is.

Speed habits:
- inner loops run over contiguous memory with an index starting at 0 (a row or slice is taken first),
  so Numba can drop its negative-index check and LLVM can vectorize;
- products are register-tiled dot products of contiguous rows (see ``cpu_gemm.py``);
- accumulators start as ``x.dtype.type(0)``, so a float32 kernel stays float32 (a bare ``0.0`` would
  promote the sum to float64).

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding.
"""
import numpy as np
from numba import njit, prange

from . import cpu_conv
from .cpu_gemm import matmul_nt, transpose

# Labels (K7), (K8) (the im2col view of a convolution) are explained in cpu_conv.py.

# Max-pooling must see NaNs (torch lets a NaN win the max), so its kernels keep every fast-math flag
# except 'nnan' and 'ninf' (which would let LLVM assume that neither NaN nor infinity ever occurs).
_POOL_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# --- matrix product ----------------------------------------------------------------------------------


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) -> (M, N), eqs. (L1)-(L3).  Twin of reference.matmul; see its docstring for shapes.

    The kernel (``cpu_gemm.matmul_nt``) wants op(a) as (M, K) rows and op(b) as (N, K) rows, both read
    along K, so the wrapper transposes into that layout where needed.
    """
    A = transpose(a) if transpose_a else np.ascontiguousarray(a)  # (M, K)
    Bt = np.ascontiguousarray(b) if transpose_b else transpose(b)  # (N, K)
    out = np.empty((A.shape[0], Bt.shape[0]), dtype=A.dtype)
    matmul_nt(A, Bt, out)
    return out


# --- convolution -------------------------------------------------------------------------------------


def _ints(pair):
    return int(pair[0]), int(pair[1])


def conv2d_forward(x, w, b, stride, padding):
    """(N, C, H, W) -> (N, O, OH, OW), eq. (K1).  Twin of reference.conv2d_forward; see its docstring."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    OH = (H + 2 * PH - KH) // SH + 1  # (K2)
    OW = (W + 2 * PW - KW) // SW + 1
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(O, C * KH * KW)  # W2[o] = w[o].ravel()
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    has_bias = b is not None
    # Always pass an array for b: one specialisation per dtype, with or without bias.
    bias = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(O, dtype=x.dtype)
    cpu_conv.conv2d_forward(x, w2, bias, y.reshape(N, O, OH * OW), KH, KW, SH, SW, PH, PW, OH, OW,
                            has_bias)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding):
    """dL/dx, (N, C, H, W), eqs. (K8), (K5).  Twin of reference.conv2d_grad_input; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    w2t = transpose(np.ascontiguousarray(w, dtype=gy.dtype).reshape(O, C * KH * KW))  # W2^T, (R, O)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    cpu_conv.conv2d_grad_input(gy.reshape(N, O, OH * OW), w2t, gx, KH, KW, SH, SW, PH, PW, OH, OW)
    return gx


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding):
    """dL/dw, (O, C, KH, KW), eqs. (K4), (K8).  Twin of reference.conv2d_grad_weight; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    x = np.ascontiguousarray(x, dtype=gy.dtype)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = (int(s) for s in w_shape)
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    gw = np.empty((O, C * KH * KW), dtype=gy.dtype)
    cpu_conv.conv2d_grad_weight(x, gy.reshape(N, O, OH * OW), gw, KH, KW, SH, SW, PH, PW, OH, OW)
    return gw.reshape(O, C, KH, KW)


# --- max-pooling -------------------------------------------------------------------------------------


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_forward(x, y, idx, KH, KW, SH, SW, PH, PW):
    """y = window maxima (P1), idx = flat h*W+w of the first maximum (P3).  Twin: reference.maxpool2d_forward.

    Threads take (n, c) planes (prange).  Each window is clipped to the image (the -inf padding can
    never win), scanned p then q, and a tap replaces the best only if strictly greater or NaN (torch's
    rule), so the first of equal maxima keeps its index.  The best starts as the window's first real
    element, which is what torch reports for a window of -inf values.
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        xp = x[n, c]
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
                y[n, c, i, j] = best
                idx[n, c, i, j] = best_at


def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, indices), both (N, C, OH, OW).  Twin of reference.maxpool2d_forward; see its docstring."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    KH, KW = int(kernel_size[0]), int(kernel_size[1])
    SH, SW = int(stride[0]), int(stride[1])
    PH, PW = int(padding[0]), int(padding[1])
    OH = (H + 2 * PH - KH) // SH + 1  # (P2)
    OW = (W + 2 * PW - KW) // SW + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    _maxpool2d_forward(x, y, idx, KH, KW, SH, SW, PH, PW)
    return y, idx


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_backward(gy, idx, gx):
    """gx[n, c].flat[idx[n,c,i,j]] += gy[n,c,i,j], eq. (P4).  Twin: reference.maxpool2d_backward.

    Threads take (n, c) planes (prange): all indices of a plane point into that plane, so each thread
    scatters only into its own memory, in output order (the same order as np.add.at in the twin).
    """
    N, C = gy.shape[0], gy.shape[1]
    P = gy.shape[2] * gy.shape[3]
    HW = gx.shape[2] * gx.shape[3]
    g2 = gy.reshape(N * C, P)
    i2 = idx.reshape(N * C, P)
    x2 = gx.reshape(N * C, HW)
    for t in prange(N * C):
        dst = x2[t]
        for k in range(HW):
            dst[k] = 0
        src = g2[t]
        at = i2[t]
        for k in range(P):
            dst[at[k]] += src[k]


def maxpool2d_backward(grad_y, indices, x_shape):
    """dL/dx, (N, C, H, W).  Twin of reference.maxpool2d_backward; see its docstring for shapes."""
    gy = np.ascontiguousarray(grad_y)
    idx = np.ascontiguousarray(indices, dtype=np.int64)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    _maxpool2d_backward(gy, idx, gx)
    return gx
