"""Average pooling and adaptive (average and max) pooling on the GPU.

Derivation: derivations/16-average-pooling.md (V1)-(V10); the output size is (P5) of
derivations/05-maxpool.md.  NumPy twins in ``reference_pooling_avg.py``.

Forwards: one thread per output, which sums (or scans) its window.  Backwards are gathers, as max-pooling's:
one thread per input element adds the shares of the windows that contain it, in a fixed order, so no two
threads write the same element and no atomics are needed.  The windows that contain input row h are
found by inverting the window bounds: for AvgPool2d, i*SH - PH <= h < i*SH - PH + KH; for adaptive
pooling, (V10).

Legend: N batch, C channels, H/W input size, OH/OW output, KH/KW window, SH/SW stride, PH/PW padding.
"""
import math

import numpy as np
from numba import cuda, float32

from ..reference import pool_out_size
from .buffers import empty
from .launch import THREADS, blocks, device_f32, device_i64, output


@cuda.jit(device=True, inline=True)
def _count(i, size, k, s, p, include_pad):
    """What window i counts towards its divisor along one axis  (V2)."""
    start = i * s - p
    end = min(start + k, size + p)
    if include_pad:
        return end - start
    return min(end, size) - max(start, 0)


def _avg_forward(x, y, kh, kw, sh, sw, ph, pw, include_pad, divisor):
    t = cuda.grid(1)
    nb, cc, hh, ww = x.shape
    oh, ow = y.shape[2], y.shape[3]
    if t < nb * cc * oh * ow:
        j = t % ow
        i = (t // ow) % oh
        c = (t // (ow * oh)) % cc
        n = t // (ow * oh * cc)
        h0, w0 = max(i * sh - ph, 0), max(j * sw - pw, 0)
        h1, w1 = min(i * sh - ph + kh, hh), min(j * sw - pw + kw, ww)
        total = float32(0.0)
        for h in range(h0, h1):
            for w in range(w0, w1):
                total += x[n, c, h, w]
        d = divisor
        if d == 0:
            d = _count(i, hh, kh, sh, ph, include_pad) * _count(j, ww, kw, sw, pw, include_pad)  # (V2)
        y[n, c, i, j] = total / float32(d)  # (V1)


def _avg_backward(gy, dx, kh, kw, sh, sw, ph, pw, include_pad, divisor):
    """One thread per input dx[n, c, h, w]: the sum of gy[i, j] / d_ij over the windows holding (h, w)  (V4)."""
    t = cuda.grid(1)
    nb, cc, hh, ww = dx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    if t < nb * cc * hh * ww:
        w = t % ww
        h = (t // ww) % hh
        c = (t // (ww * hh)) % cc
        n = t // (ww * hh * cc)
        i_lo = max(0, (h + ph - kh + sh) // sh)  # the first window whose rows reach down to h
        i_hi = min(oh - 1, (h + ph) // sh)  # the last one that starts at or above h
        j_lo = max(0, (w + pw - kw + sw) // sw)
        j_hi = min(ow - 1, (w + pw) // sw)
        total = float32(0.0)
        for i in range(i_lo, i_hi + 1):  # a fixed order: the same sum on every run
            for j in range(j_lo, j_hi + 1):
                d = divisor
                if d == 0:
                    d = _count(i, hh, kh, sh, ph, include_pad) * _count(j, ww, kw, sw, pw, include_pad)
                total += gy[n, c, i, j] / float32(d)
        dx[n, c, h, w] = total


def _adaptive_forward(x, y, idx, want_max):
    """One thread per output: the mean (V6), or the first maximum and its index (V8), of its window (V5)."""
    t = cuda.grid(1)
    nb, cc, hh, ww = x.shape
    oh, ow = y.shape[2], y.shape[3]
    if t < nb * cc * oh * ow:
        j = t % ow
        i = (t // ow) % oh
        c = (t // (ow * oh)) % cc
        n = t // (ow * oh * cc)
        h0, h1 = (i * hh) // oh, ((i + 1) * hh + oh - 1) // oh
        w0, w1 = (j * ww) // ow, ((j + 1) * ww + ow - 1) // ow
        if want_max:
            best = float32(-math.inf)
            at = h0 * ww + w0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    v = x[n, c, h, w]
                    if v > best or math.isnan(v):  # a NaN wins, ties keep the first  (V8)
                        best = v
                        at = h * ww + w
            y[n, c, i, j] = best
            idx[n, c, i, j] = at
        else:
            total = float32(0.0)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total += x[n, c, h, w]
            y[n, c, i, j] = total / float32((h1 - h0) * (w1 - w0))  # (V6)


def _adaptive_backward(gy, idx, dx, want_max):
    """One thread per input dx[n, c, h, w]: over the windows holding (h, w), found by (V10), the sum of
    gy / (window size) (V7), or of the gy of the windows whose maximum it was (V9)."""
    t = cuda.grid(1)
    nb, cc, hh, ww = dx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    if t < nb * cc * hh * ww:
        w = t % ww
        h = (t // ww) % hh
        c = (t // (ww * hh)) % cc
        n = t // (ww * hh * cc)
        me = h * ww + w
        total = float32(0.0)
        for i in range((h * oh) // hh, min(oh, ((h + 1) * oh - 1) // hh + 1)):  # (V10)
            size_h = ((i + 1) * hh + oh - 1) // oh - (i * hh) // oh
            for j in range((w * ow) // ww, min(ow, ((w + 1) * ow - 1) // ww + 1)):
                if want_max:
                    if idx[n, c, i, j] == me:
                        total += gy[n, c, i, j]  # (V9)
                else:
                    size_w = ((j + 1) * ww + ow - 1) // ow - (j * ww) // ow
                    total += gy[n, c, i, j] / float32(size_h * size_w)  # (V7)
        dx[n, c, h, w] = total


avgpool2d_forward_kernel = cuda.jit(_avg_forward)
avgpool2d_backward_kernel = cuda.jit(_avg_backward)
adaptive_pool2d_forward_kernel = cuda.jit(_adaptive_forward)
adaptive_pool2d_backward_kernel = cuda.jit(_adaptive_backward)


def _geometry(kernel_size, stride, padding, count_include_pad, divisor_override):
    return (int(kernel_size[0]), int(kernel_size[1]), int(stride[0]), int(stride[1]), int(padding[0]),
            int(padding[1]), bool(count_include_pad), int(divisor_override or 0))


def avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, out=None):
    """(V1), (V2), OH and OW by (P5).  NumPy twin: ``reference.avgpool2d_forward``."""
    who = "cuda avgpool2d_forward"
    device_f32(x, who, "x", ndim=4)
    geom = _geometry(kernel_size, stride, padding, count_include_pad, divisor_override)
    nb, c, h, w = x.shape
    oh = pool_out_size(h, geom[0], geom[2], geom[4], 1, bool(ceil_mode))  # (P5)
    ow = pool_out_size(w, geom[1], geom[3], geom[5], 1, bool(ceil_mode))
    y = output(out, (nb, c, oh, ow), who)
    if y.size:
        avgpool2d_forward_kernel[blocks(y.size), THREADS](x, y, *geom)
    return y


def avgpool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override, out=None):
    """(V4), a gather.  NumPy twin: ``reference.avgpool2d_backward``."""
    who = "cuda avgpool2d_backward"
    device_f32(grad_y, who, "grad_y", ndim=4)
    dx = output(out, tuple(int(v) for v in x_shape), who)
    if dx.size:
        avgpool2d_backward_kernel[blocks(dx.size), THREADS](
            grad_y, dx, *_geometry(kernel_size, stride, padding, count_include_pad, divisor_override))
    return dx


def _no_indices():
    return empty((0, 0, 0, 0), dtype=np.int64)


def adaptive_avgpool2d_forward(x, output_size, out=None):
    """(V5), (V6).  NumPy twin: ``reference.adaptive_avgpool2d_forward``."""
    who = "cuda adaptive_avgpool2d_forward"
    device_f32(x, who, "x", ndim=4)
    y = output(out, (x.shape[0], x.shape[1], int(output_size[0]), int(output_size[1])), who)
    if y.size:
        adaptive_pool2d_forward_kernel[blocks(y.size), THREADS](x, y, _no_indices(), False)
    return y


def adaptive_avgpool2d_backward(grad_y, x_shape, out=None):
    """(V7), (V10), a gather.  NumPy twin: ``reference.adaptive_avgpool2d_backward``."""
    who = "cuda adaptive_avgpool2d_backward"
    device_f32(grad_y, who, "grad_y", ndim=4)
    dx = output(out, tuple(int(v) for v in x_shape), who)
    if dx.size:
        adaptive_pool2d_backward_kernel[blocks(dx.size), THREADS](grad_y, _no_indices(), dx, False)
    return dx


def adaptive_maxpool2d_forward(x, output_size):
    """(y, int64 indices): (V5), (V8).  NumPy twin: ``reference.adaptive_maxpool2d_forward``."""
    who = "cuda adaptive_maxpool2d_forward"
    device_f32(x, who, "x", ndim=4)
    shape = (x.shape[0], x.shape[1], int(output_size[0]), int(output_size[1]))
    y = empty(shape, dtype=np.float32)
    idx = empty(shape, dtype=np.int64)
    if y.size:
        adaptive_pool2d_forward_kernel[blocks(y.size), THREADS](x, y, idx, True)
    return y, idx


def adaptive_maxpool2d_backward(grad_y, indices, x_shape, out=None):
    """(V9), (V10), a gather.  NumPy twin: ``reference.adaptive_maxpool2d_backward``."""
    who = "cuda adaptive_maxpool2d_backward"
    device_f32(grad_y, who, "grad_y", ndim=4)
    device_i64(indices, who, "indices", shape=tuple(grad_y.shape))
    dx = output(out, tuple(int(v) for v in x_shape), who)
    if dx.size:
        adaptive_pool2d_backward_kernel[blocks(dx.size), THREADS](grad_y, indices, dx, True)
    return dx


__all__ = ["adaptive_avgpool2d_backward", "adaptive_avgpool2d_forward", "adaptive_maxpool2d_backward",
           "adaptive_maxpool2d_forward", "avgpool2d_backward", "avgpool2d_forward"]
