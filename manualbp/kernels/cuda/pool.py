"""Max-pooling on the GPU.

Derivation: derivations/05-maxpool.md (P1)-(P6).

Forward: one thread per output finds the first maximum of its window (torch's rule: a NaN wins, ties
keep the first) and records its flat index h*W + w in the input plane; a dilated window (P6) takes
every DH-th row and DW-th column.  Backward is a gather: one thread per input element adds the
gradients of the windows that contain it and chose it, in a fixed order, so no two threads write the
same element and no atomics are needed.  ``ceil_mode`` changes only OH and OW (P5).

Legend: N batch, C channels, H/W input size, OH/OW output, KH/KW window, SH/SW stride, PH/PW padding,
DH/DW dilation; EH = DH*(KH-1) + 1 and EW the rows and columns a window spans.
"""
import math

import numpy as np
from numba import cuda, float32

from ..reference import pool_out_size
from .buffers import empty
from .launch import THREADS, blocks, device_f32, device_i64, output, pair

# --- max-pooling ----------------------------------------------------------------------------------------

def _maxpool_forward(x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw):
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
        # torch's index when every value is -inf: the window's first tap inside the image (P6)
        h_first = h0 if h0 >= 0 else h0 + (-h0 + dh - 1) // dh * dh
        w_first = w0 if w0 >= 0 else w0 + (-w0 + dw - 1) // dw * dw
        best_at = h_first * ww + w_first
        for p in range(kh):
            h = h0 + p * dh
            if h >= 0 and h < hh:
                for q in range(kw):
                    w = w0 + q * dw
                    if w >= 0 and w < ww:
                        v = x[n, c, h, w]
                        if v > best or math.isnan(v):  # strictly greater: the first maximum wins; a NaN wins
                            best = v
                            best_at = h * ww + w
        y[n, c, i, j] = best
        idx[n, c, i, j] = best_at


def _maxpool_backward(gy, idx, dx, eh, ew, sh, sw, ph, pw):
    """One thread per input dx[n, c, h, w]: the sum of gy over the windows whose maximum was (h, w).

    eh x ew is the span of a window (DH*(KH-1) + 1 rows for a dilated one): the windows whose span holds
    (h, w) are the candidates, and a window counts only if its saved index is (h, w) itself  (P4).
    """
    t = cuda.grid(1)
    nb, cc, hh, ww = dx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    if t < nb * cc * hh * ww:
        w = t % ww
        h = (t // ww) % hh
        c = (t // (ww * hh)) % cc
        n = t // (ww * hh * cc)
        me = h * ww + w
        # Output row i spans input rows i*SH - PH .. i*SH - PH + EH - 1: those that contain h are
        # i_lo <= i <= i_hi below (clipped to the output); the same for columns.
        i_lo = max(0, (h + ph - eh + sh) // sh)
        i_hi = min(oh - 1, (h + ph) // sh)
        j_lo = max(0, (w + pw - ew + sw) // sw)
        j_hi = min(ow - 1, (w + pw) // sw)
        total = float32(0.0)
        for i in range(i_lo, i_hi + 1):  # a fixed order: the sum is the same on every run
            for j in range(j_lo, j_hi + 1):
                if idx[n, c, i, j] == me:
                    total += gy[n, c, i, j]
        dx[n, c, h, w] = total


maxpool2d_forward_kernel = cuda.jit(_maxpool_forward)
maxpool2d_backward_kernel = cuda.jit(_maxpool_backward)


def _pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode, who):
    kh, kw = pair(kernel_size, who, "kernel_size")
    sh, sw = pair(kernel_size if stride is None else stride, who, "stride")
    ph, pw = pair(padding, who, "padding")
    dh, dw = pair(dilation, who, "dilation")
    nb, c, h, w = (int(v) for v in x_shape)
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{who}: expected kernel_size, stride, dilation >= 1 and 0 <= padding <= kernel_size / 2, "
                         f"got {kernel_size}, {stride}, {padding}, {dilation}")
    oh = pool_out_size(h, kh, sh, ph, dh, bool(ceil_mode))  # (P5)
    ow = pool_out_size(w, kw, sw, pw, dw, bool(ceil_mode))
    if oh < 1 or ow < 1:
        raise ValueError(f"{who}: a {kh}x{kw} window with dilation ({dh}, {dw}) does not fit the padded "
                         f"{h + 2 * ph}x{w + 2 * pw} input")
    return nb, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw


def maxpool2d_forward(x, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """(y, indices): window maxima (N,C,OH,OW) and the int64 flat index h*W + w of each one in its plane.

    NumPy twin: ``manualbp.kernels.reference.maxpool2d_forward``.  x (N,C,H,W) float32 device array;
    OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, rounded up with ``ceil_mode`` (P5).  The first maximum in
    the window wins (row by row), as in torch.
    """
    who = "cuda maxpool2d_forward"
    device_f32(x, who, "x", ndim=4)
    nb, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw = _pool_geometry(x.shape, kernel_size, stride, padding,
                                                                   dilation, ceil_mode, who)
    y = empty((nb, c, oh, ow), dtype=np.float32)
    idx = empty((nb, c, oh, ow), dtype=np.int64)
    if y.size:
        maxpool2d_forward_kernel[blocks(y.size), THREADS](x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw)
    return y, idx


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size, stride, padding, dilation=1, ceil_mode=False,
                       out=None):
    """dL/dx (N,C,H,W): each input element gathers the gradients of the windows that chose it.

    NumPy twin: ``manualbp.kernels.reference.maxpool2d_backward`` (which scatters instead; the
    sums are the same).  Unlike the CPU interface it needs the window geometry, to know which
    windows contain each input element.  Deterministic: a gather in a fixed order, no atomics.
    """
    who = "cuda maxpool2d_backward"
    nb, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw = _pool_geometry(x_shape, kernel_size, stride, padding,
                                                                   dilation, ceil_mode, who)
    device_f32(grad_y, who, "grad_y", shape=(nb, c, oh, ow))
    device_i64(indices, who, "indices", shape=(nb, c, oh, ow))
    dx = output(out, tuple(int(v) for v in x_shape), who)
    if dx.size:
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the rows and columns a window spans
        maxpool2d_backward_kernel[blocks(dx.size), THREADS](grad_y, indices, dx, eh, ew, sh, sw, ph, pw)
    return dx
