"""Padding modes on the CPU: ``pad2d`` (a gather) and ``pad2d_backward`` (its scatter-add).

Derivation: derivations/04-conv2d.md ((K15), (K16)); readable twins: ``reference.pad2d`` and
``reference.pad2d_backward`` (``tests/test_conv_options.py`` holds them equal).

Conv2d with ``padding_mode`` 'reflect', 'replicate' or 'circular' (or an uneven 'same' padding) pads its
input here and then convolves with no padding.  Each padded pixel copies one input pixel: with the index
maps rho_H, rho_W of ``reference.pad_source`` (made once per shape, a few ints),

    xpad[n, c, u, v] = x[n, c, rho_H[u], rho_W[v]]        (0 where rho is -1: mode 'zeros')   (K15)
    dL/dx[n, c, h, w] = sum over u, v with rho_H[u] = h, rho_W[v] = w of dL/dxpad[n, c, u, v]  (K16)

One (n, c) plane per task (prange): a plane's copies all land in the same plane, so each thread writes
only its own memory, and the backward adds in the order u, then v, whatever the thread count.  No
fast-math: a NaN is copied, and added, like any other value.

Legend: N batch, C channels, H/W input size, HP/WP padded size.
"""
import functools

import numpy as np
from numba import njit, prange

from .. import reference

# Copying is cheap: below this many padded elements the thread pool is not woken.
PAD_PARALLEL_MIN_ELEMENTS = 1 << 15


@functools.lru_cache(maxsize=64)
def _maps(H, W, pads, mode):
    """(rho_H, rho_W) as int64 arrays: the source row of each padded row, the source column of each
    padded column (-1: a zero), eq. (K15).  Cached per shape; the kernels only read them."""
    left, right, top, bottom = pads
    return (reference.pad_source(H, top, bottom, mode).astype(np.int64),
            reference.pad_source(W, left, right, mode).astype(np.int64))


@njit(cache=True)
def _pad_plane(src, rows, cols, dst):
    """dst[u, v] = src[rows[u], cols[v]], or 0 where either map is -1  (K15)."""
    zero = dst.dtype.type(0)
    for u in range(dst.shape[0]):
        r = rows[u]
        out = dst[u]
        if r < 0:
            for v in range(dst.shape[1]):
                out[v] = zero
            continue
        line = src[r]
        for v in range(dst.shape[1]):
            c = cols[v]
            out[v] = line[c] if c >= 0 else zero


@njit(cache=True)
def _unpad_plane(g, rows, cols, dst):
    """dst = 0, then dst[rows[u], cols[v]] += g[u, v] for every u, then v, that copied a pixel  (K16)."""
    zero = dst.dtype.type(0)
    for h in range(dst.shape[0]):
        for w in range(dst.shape[1]):
            dst[h, w] = zero
    for u in range(g.shape[0]):
        r = rows[u]
        if r < 0:
            continue
        line = g[u]
        out = dst[r]
        for v in range(g.shape[1]):
            c = cols[v]
            if c >= 0:
                out[c] += line[v]


@njit(cache=True, parallel=True)
def _pad(x3, rows, cols, y3):
    for t in prange(x3.shape[0]):
        _pad_plane(x3[t], rows, cols, y3[t])


@njit(cache=True)
def _pad_serial(x3, rows, cols, y3):
    for t in range(x3.shape[0]):
        _pad_plane(x3[t], rows, cols, y3[t])


@njit(cache=True, parallel=True)
def _unpad(g3, rows, cols, x3):
    for t in prange(g3.shape[0]):
        _unpad_plane(g3[t], rows, cols, x3[t])


@njit(cache=True)
def _unpad_serial(g3, rows, cols, x3):
    for t in range(g3.shape[0]):
        _unpad_plane(g3[t], rows, cols, x3[t])


def _pads(pads):
    return tuple(int(p) for p in pads)


def pad2d(x, pads, mode):
    """(N, C, H, W) -> (N, C, top+H+bottom, left+W+right), eq. (K15).  Twin of reference.pad2d."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    pads = _pads(pads)
    rows, cols = _maps(H, W, pads, mode)
    y = np.empty((N, C, rows.shape[0], cols.shape[0]), dtype=x.dtype)
    if y.size:
        kernel = _pad if y.size >= PAD_PARALLEL_MIN_ELEMENTS else _pad_serial
        kernel(x.reshape(N * C, H, W), rows, cols, y.reshape(N * C, rows.shape[0], cols.shape[0]))
    return y


def pad2d_backward(grad_y, x_shape, pads, mode):
    """dL/dx, x_shape, eq. (K16).  Twin of reference.pad2d_backward; see its docstring."""
    g = np.ascontiguousarray(grad_y)
    N, C, H, W = (int(s) for s in x_shape)
    rows, cols = _maps(H, W, _pads(pads), mode)
    gx = np.empty((N, C, H, W), dtype=g.dtype)
    if gx.size:
        kernel = _unpad if g.size >= PAD_PARALLEL_MIN_ELEMENTS else _unpad_serial
        kernel(g.reshape(N * C, g.shape[2], g.shape[3]), rows, cols, gx.reshape(N * C, H, W))
    return gx
