"""Max-pooling on the GPU.

Derivation: derivations/05-maxpool.md (P1)-(P4).

Forward: one thread per output finds the first maximum of its window (torch's rule: a NaN wins, ties
keep the first) and records its flat index h*W + w in the input plane.  Backward is a gather: one
thread per input element adds the gradients of the windows that contain it and chose it, in a fixed
order, so no two threads write the same element and no atomics are needed.

Legend: N batch, C channels, H/W input size, OH/OW output, KH/KW window, SH/SW stride, PH/PW padding.
"""
import math

import numpy as np
from numba import cuda, float32

from .launch import THREADS, blocks, device_f32, device_i64, output, pair

# --- max-pooling ----------------------------------------------------------------------------------------

def _maxpool_forward(x, y, idx, kh, kw, sh, sw, ph, pw):
    """One thread per output y[n, c, i, j]: the first maximum of its window and its flat index h*W + w."""
    t = cuda.grid(1)
    nb, cc, hh, ww = x.shape
    oh, ow = y.shape[2], y.shape[3]
    if t < nb * cc * oh * ow:
        j = t % ow
        i = (t // ow) % oh
        c = (t // (ow * oh)) % cc
        n = t // (ow * oh * cc)
        h0 = i * sh - ph
        w0 = j * sw - pw
        best = float32(-math.inf)  # padding counts as -inf: it never wins
        best_at = max(h0, 0) * ww + max(w0, 0)  # torch's index when every value is -inf
        for p in range(kh):
            h = h0 + p
            if h >= 0 and h < hh:
                for q in range(kw):
                    w = w0 + q
                    if w >= 0 and w < ww:
                        v = x[n, c, h, w]
                        if v > best or math.isnan(v):  # strictly greater: the first maximum wins; a NaN wins
                            best = v
                            best_at = h * ww + w
        y[n, c, i, j] = best
        idx[n, c, i, j] = best_at


def _maxpool_backward(gy, idx, dx, kh, kw, sh, sw, ph, pw):
    """One thread per input dx[n, c, h, w]: the sum of gy over the windows whose maximum was (h, w)."""
    t = cuda.grid(1)
    nb, cc, hh, ww = dx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    if t < nb * cc * hh * ww:
        w = t % ww
        h = (t // ww) % hh
        c = (t // (ww * hh)) % cc
        n = t // (ww * hh * cc)
        me = h * ww + w
        # Output row i covers input rows i*SH - PH .. i*SH - PH + KH - 1: those that contain h are
        # i_lo <= i <= i_hi below (clipped to the output); the same for columns.
        i_lo = max(0, (h + ph - kh + sh) // sh)
        i_hi = min(oh - 1, (h + ph) // sh)
        j_lo = max(0, (w + pw - kw + sw) // sw)
        j_hi = min(ow - 1, (w + pw) // sw)
        total = float32(0.0)
        for i in range(i_lo, i_hi + 1):  # a fixed order: the sum is the same on every run
            for j in range(j_lo, j_hi + 1):
                if idx[n, c, i, j] == me:
                    total += gy[n, c, i, j]
        dx[n, c, h, w] = total


maxpool2d_forward_kernel = cuda.jit(_maxpool_forward)
maxpool2d_backward_kernel = cuda.jit(_maxpool_backward)


def _pool_geometry(x_shape, kernel_size, stride, padding, who):
    kh, kw = pair(kernel_size, who, "kernel_size")
    sh, sw = pair(kernel_size if stride is None else stride, who, "stride")
    ph, pw = pair(padding, who, "padding")
    nb, c, h, w = (int(v) for v in x_shape)
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{who}: expected kernel_size >= 1, stride >= 1 and 0 <= padding <= kernel_size / 2, "
                         f"got {kernel_size}, {stride}, {padding}")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{who}: a {kh}x{kw} window does not fit the padded {h + 2 * ph}x{w + 2 * pw} input")
    return nb, c, oh, ow, kh, kw, sh, sw, ph, pw


def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, indices): window maxima (N,C,OH,OW) and the int64 flat index h*W + w of each one in its plane.

    NumPy twin: ``manualbp.kernels.reference.maxpool2d_forward``.  x (N,C,H,W) float32 device array;
    OH = (H + 2*PH - KH) // SH + 1.  The first maximum in the window wins (row by row), as in torch.
    """
    who = "cuda maxpool2d_forward"
    device_f32(x, who, "x", ndim=4)
    nb, c, oh, ow, kh, kw, sh, sw, ph, pw = _pool_geometry(x.shape, kernel_size, stride, padding, who)
    y = cuda.device_array((nb, c, oh, ow), dtype=np.float32)
    idx = cuda.device_array((nb, c, oh, ow), dtype=np.int64)
    if y.size:
        maxpool2d_forward_kernel[blocks(y.size), THREADS](x, y, idx, kh, kw, sh, sw, ph, pw)
    return y, idx


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size, stride, padding, out=None):
    """dL/dx (N,C,H,W): each input element gathers the gradients of the windows that chose it.

    NumPy twin: ``manualbp.kernels.reference.maxpool2d_backward`` (which scatters instead; the
    sums are the same).  Unlike the CPU interface it needs the window geometry, to know which
    windows contain each input element.  Deterministic: a gather in a fixed order, no atomics.
    """
    who = "cuda maxpool2d_backward"
    nb, c, oh, ow, kh, kw, sh, sw, ph, pw = _pool_geometry(x_shape, kernel_size, stride, padding, who)
    device_f32(grad_y, who, "grad_y", shape=(nb, c, oh, ow))
    device_i64(indices, who, "indices", shape=(nb, c, oh, ow))
    dx = output(out, tuple(int(v) for v in x_shape), who)
    if dx.size:
        maxpool2d_backward_kernel[blocks(dx.size), THREADS](grad_y, indices, dx, kh, kw, sh, sw, ph, pw)
    return dx
