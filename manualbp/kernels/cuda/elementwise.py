"""Element-by-element kernels on the GPU: activations, softmax, bias, add and scale; and the block reduction.

Derivations: derivations/06-activations.md (A1-A11), derivations/03-linear.md (the bias, (L1)),
derivations/01-chain-rule.md ((C3): gradients add), derivations/04-conv2d.md (the bias gradient, (K3)),
derivations/11-gpu-tiled-matmul.md (syncthreads).

One thread per element, ``i = cuda.grid(1)``, for everything but softmax (one thread per line along
its axis) and the reductions.  Those (the bias
gradient here, the losses in ``loss.py``) use a fixed block of THREADS threads: thread t adds
the elements t, t + THREADS, t + 2*THREADS, ... in that order, then ``tree_sum`` halves the THREADS
partial sums in shared memory.  The order of every addition depends on the array's size only, never
on timing, so the result is the same bit for bit on every run (no float atomics anywhere).

Every literal is a float32 (``float32(1.0)``): a bare ``1.0`` is a float64 and drags the
arithmetic around it into float64, which a GPU runs many times slower.
"""
import math

import numpy as np
from numba import cuda, float32

from .buffers import empty
from .gemm import linear, matmul
from .launch import THREADS, blocks, device_f32, flat, output, scalar_like

# --- the block reduction --------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def tree_sum(buf):
    """Sum the THREADS values buf[0..THREADS-1] of a shared array; every thread gets the total.

    Call it from all THREADS threads of the block (it synchronises them), after each thread t has
    written its partial sum to buf[t].
    """
    t = cuda.threadIdx.x
    stride = THREADS // 2
    while stride > 0:
        # Protects the partial sums: every thread's previous write to buf (its own partial sum, or
        # the previous halving round) is finished before anyone reads it.
        cuda.syncthreads()
        if t < stride:
            buf[t] += buf[t + stride]
        stride //= 2
    # Protects buf[0]: the last round's write is finished before every thread reads the total.
    cuda.syncthreads()
    total = buf[0]
    # Protects the total: nobody writes buf again (a second reduction) before everyone has read it.
    cuda.syncthreads()
    return total


# --- activations (derivations/06-activations.md) -----------------------------------------------------------

def _relu_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = float32(0.0) if v <= float32(0.0) else v  # noqa: FURB136  (A1); max() would turn a NaN into 0


def _relu_backward(gy, x, gx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        gx[i] = float32(0.0) if x[i] <= float32(0.0) else gy[i]  # (A2); at a NaN the gradient passes, as torch


def _leaky_relu_forward(x, slope, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = v if v > float32(0.0) else v * slope  # (A3)


def _leaky_relu_backward(gy, x, slope, gx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        gx[i] = gy[i] if x[i] > float32(0.0) else gy[i] * slope  # (A4)


def _sigmoid_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        e = math.exp(-abs(v))  # e^-|x| <= 1: no overflow for any x
        one = float32(1.0)
        y[i] = one / (one + e) if v >= float32(0.0) else e / (one + e)  # (A5)


def _sigmoid_backward(gy, y, gx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        s = y[i]
        gx[i] = gy[i] * s * (float32(1.0) - s)  # (A6), from the saved output s


def _tanh_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = math.tanh(x[i])  # (A7)


def _tanh_backward(gy, y, gx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        t = y[i]
        gx[i] = gy[i] * (float32(1.0) - t * t)  # (A8), from the saved output t


relu_forward_kernel = cuda.jit(_relu_forward)
relu_backward_kernel = cuda.jit(_relu_backward)
leaky_relu_forward_kernel = cuda.jit(_leaky_relu_forward)
leaky_relu_backward_kernel = cuda.jit(_leaky_relu_backward)
sigmoid_forward_kernel = cuda.jit(_sigmoid_forward)
sigmoid_backward_kernel = cuda.jit(_sigmoid_backward)
tanh_forward_kernel = cuda.jit(_tanh_forward)
tanh_backward_kernel = cuda.jit(_tanh_backward)


def _pointwise(kernel, who, arrays, scalars=(), out=None):
    """Check same-shape float32 device arrays, launch ``kernel`` on their flat views, return the output."""
    first = arrays[0][1]
    for name, a in arrays:
        device_f32(a, who, name, shape=first.shape)
    y = output(out, first.shape, who)
    if y.size:
        args = [flat(a) for _, a in arrays] + [np.float32(s) for s in scalars] + [flat(y)]
        kernel[blocks(y.size), THREADS](*args)
    return y


def relu_forward(x, out=None):
    """max(x, 0) elementwise (A1).  NumPy twin: ``reference.relu_forward``.  ``out=x`` works in place."""
    return _pointwise(relu_forward_kernel, "cuda relu_forward", [("x", x)], out=out)


def relu_backward(grad_y, x, out=None):
    """grad_y where x > 0, else 0 (A2).  NumPy twin: ``reference.relu_backward``."""
    return _pointwise(relu_backward_kernel, "cuda relu_backward", [("grad_y", grad_y), ("x", x)], out=out)


def leaky_relu_forward(x, negative_slope=0.01, out=None):
    """x if x > 0 else negative_slope * x (A3).  NumPy twin: ``reference.leaky_relu_forward``."""
    return _pointwise(leaky_relu_forward_kernel, "cuda leaky_relu_forward", [("x", x)], (negative_slope,), out)


def leaky_relu_backward(grad_y, x, negative_slope=0.01, out=None):
    """grad_y if x > 0 else negative_slope * grad_y (A4).  NumPy twin: ``reference.leaky_relu_backward``."""
    return _pointwise(leaky_relu_backward_kernel, "cuda leaky_relu_backward", [("grad_y", grad_y), ("x", x)],
                      (negative_slope,), out)


def sigmoid_forward(x, out=None):
    """1 / (1 + e^-x), computed from e^-|x| (A5).  NumPy twin: ``reference.sigmoid_forward``."""
    return _pointwise(sigmoid_forward_kernel, "cuda sigmoid_forward", [("x", x)], out=out)


def sigmoid_backward(grad_y, s, out=None):
    """grad_y * s * (1 - s) from the saved output s (A6).  NumPy twin: ``reference.sigmoid_backward``."""
    return _pointwise(sigmoid_backward_kernel, "cuda sigmoid_backward", [("grad_y", grad_y), ("s", s)], out=out)


def tanh_forward(x, out=None):
    """tanh(x) (A7).  NumPy twin: ``reference.tanh_forward``."""
    return _pointwise(tanh_forward_kernel, "cuda tanh_forward", [("x", x)], out=out)


def tanh_backward(grad_y, t, out=None):
    """grad_y * (1 - t^2) from the saved output t (A8).  NumPy twin: ``reference.tanh_backward``."""
    return _pointwise(tanh_backward_kernel, "cuda tanh_backward", [("grad_y", grad_y), ("t", t)], out=out)


# --- bias (derivations/03-linear.md) ---------------------------------------------------------------------

def _bias_add(y, b, inner):
    """y[n, c, r] += b[c] on the flat view of (N, C, *) with inner = prod(*)."""
    i = cuda.grid(1)
    if i < y.shape[0]:
        c = (i // inner) % b.shape[0]
        y[i] += b[c]


def _bias_grad(gy, inner, out, accumulate):
    """Block c: out[c] (+)= sum over n and r of gy[n, c, r]; a fixed-order reduction, one block per channel."""
    buf = cuda.shared.array(THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    channels = out.shape[0]
    count = (gy.shape[0] // (channels * inner)) * inner  # N * inner elements belong to channel c
    part = float32(0.0)
    for e in range(t, count, THREADS):  # trips depend on the shapes only, not on the grid
        n = e // inner
        r = e - n * inner
        part += gy[(n * channels + c) * inner + r]
    buf[t] = part
    total = tree_sum(buf)  # every thread of the block calls it: it synchronises them
    if t == 0:
        if accumulate:
            total += out[c]
        out[c] = total


bias_add_kernel = cuda.jit(_bias_add)
bias_grad_kernel = cuda.jit(_bias_grad)


def bias_add(y, b):
    """y[:, c, ...] += b[c] in place, for y (N, C) or (N, C, H, W); returns y.

    NumPy twin: the bias of ``reference.linear_forward``, ``y + b`` (Linear), or ``y + b[:, None, None]``
    (Conv2d).
    """
    who = "cuda bias_add"
    device_f32(y, who, "y", ndim=(2, 3, 4))
    device_f32(b, who, "bias", shape=(y.shape[1],))
    inner = int(np.prod(y.shape[2:], dtype=np.int64))
    if y.size:
        bias_add_kernel[blocks(y.size), THREADS](flat(y), b, inner)
    return y


def bias_grad(grad_y, out=None, accumulate=False):
    """dL/db[c] = sum of grad_y[:, c, ...] over the batch and positions -> (C,).

    NumPy twin: ``reference.bias_grad`` (L4), (K3): ``grad_y.sum(axis=0)`` (Linear) or
    ``grad_y.sum(axis=(0, 2, 3))`` (Conv2d).  ``out`` receives it, or it is added to ``out`` when
    ``accumulate``.  One block per channel, fixed order.
    """
    who = "cuda bias_grad"
    device_f32(grad_y, who, "grad_y", ndim=(2, 3, 4))
    channels = grad_y.shape[1]
    db = output(out, (channels,), who)
    inner = int(np.prod(grad_y.shape[2:], dtype=np.int64))
    if channels:
        bias_grad_kernel[channels, THREADS](flat(grad_y), inner, db, bool(accumulate))
    return db


def linear_forward(x, w, b):
    """y = x W^T + b  (L1): x (N, in), w (out, in), b (out,) or None -> y (N, out).

    NumPy twin: ``reference.linear_forward``.  The tiled product with W read transposed and the bias
    added as it is written: one launch (``gemm.linear``); with split-K, or empty sizes, the product
    and then the bias added in place.
    """
    if b is not None:
        y = linear(x, w, b)
        if y is not None:
            return y
    y = matmul(x, w, transpose_b=True)
    return y if b is None else bias_add(y, b)


# --- softmax along any axis (derivations/06-activations.md) ------------------------------------------------

def _softmax_forward(x, y, K, inner):
    """Line l of the (outer, K, inner) view: y = e^(x - max) / sum e^(x - max) over its K elements  (A9).
    Twin: ``reference.softmax_forward``.

    Element k of line l = (o, r) sits at o*K*inner + k*inner + r of the flat array; one thread per
    line, three passes over it in order k = 0..K-1 (max, exponentials and their sum, division).
    """
    line = cuda.grid(1)
    if line < x.shape[0] // K:
        o = line // inner
        base = o * K * inner + (line - o * inner)
        m = x[base]
        for k in range(1, K):
            m = max(m, x[base + k * inner])  # the maximum cancels in the ratio; every e^(x - m) <= 1
        s = float32(0.0)
        for k in range(K):
            e = math.exp(x[base + k * inner] - m)
            y[base + k * inner] = e
            s += e
        for k in range(K):
            y[base + k * inner] = y[base + k * inner] / s  # (A9)


def _softmax_backward(gy, p, K, inner, gx):
    """Line l of the (outer, K, inner) view: gx = p * (g - sum_k g_k p_k)  (A11), the Jacobian (A10) unbuilt.
    Twin: ``reference.softmax_backward``."""
    line = cuda.grid(1)
    if line < p.shape[0] // K:
        o = line // inner
        base = o * K * inner + (line - o * inner)
        dot = float32(0.0)
        for k in range(K):
            dot += gy[base + k * inner] * p[base + k * inner]
        for k in range(K):
            gx[base + k * inner] = p[base + k * inner] * (gy[base + k * inner] - dot)  # (A11)


def _log_softmax_forward(x, y, K, inner):
    """Line l of the (outer, K, inner) view: y = (x - m) - log sum e^(x - m)  (A12).
    Twin: ``reference.log_softmax_forward``."""
    line = cuda.grid(1)
    if line < x.shape[0] // K:
        o = line // inner
        base = o * K * inner + (line - o * inner)
        m = x[base]
        for k in range(1, K):
            m = max(m, x[base + k * inner])
        s = float32(0.0)
        for k in range(K):
            s += math.exp(x[base + k * inner] - m)
        lse = math.log(s)
        for k in range(K):
            y[base + k * inner] = (x[base + k * inner] - m) - lse  # (A12)


def _log_softmax_backward(gy, y, K, inner, gx):
    """Line l of the (outer, K, inner) view: gx = g - e^y * sum_k g_k  (A13).
    Twin: ``reference.log_softmax_backward``."""
    line = cuda.grid(1)
    if line < y.shape[0] // K:
        o = line // inner
        base = o * K * inner + (line - o * inner)
        total = float32(0.0)
        for k in range(K):
            total += gy[base + k * inner]
        for k in range(K):
            gx[base + k * inner] = gy[base + k * inner] - math.exp(y[base + k * inner]) * total  # (A13)


softmax_forward_kernel = cuda.jit(_softmax_forward)
softmax_backward_kernel = cuda.jit(_softmax_backward)
log_softmax_forward_kernel = cuda.jit(_log_softmax_forward)
log_softmax_backward_kernel = cuda.jit(_log_softmax_backward)


def _lines(shape, axis, who):
    """(K, inner, lines) of ``shape`` seen as (outer, K, inner) around ``axis`` (negative counts from the end)."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{who}: axis {axis} is out of range for an array of {ndim} dimensions")
    axis %= ndim
    K = int(shape[axis])
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    size = int(np.prod(shape, dtype=np.int64))
    return K, inner, (size // K if K else 0)


def softmax_forward(x, axis):
    """p = e^x / sum e^x along ``axis``  (A9), the maximum subtracted first; any shape, x's shape out.

    NumPy twin: ``reference.softmax_forward``.  One thread per line along ``axis``.
    """
    who = "cuda softmax_forward"
    device_f32(x, who, "x")
    K, inner, lines = _lines(x.shape, int(axis), who)
    y = empty(x.shape, dtype=np.float32)
    if lines:
        softmax_forward_kernel[blocks(lines), THREADS](flat(x), flat(y), K, inner)
    return y


def softmax_backward(grad_y, p, axis):
    """dL/dx = p * (g - sum_j g_j p_j) along ``axis``  (A11), from the saved output p.

    NumPy twin: ``reference.softmax_backward``.
    """
    who = "cuda softmax_backward"
    device_f32(p, who, "p")
    device_f32(grad_y, who, "grad_y", shape=p.shape)
    K, inner, lines = _lines(p.shape, int(axis), who)
    gx = empty(p.shape, dtype=np.float32)
    if lines:
        softmax_backward_kernel[blocks(lines), THREADS](flat(grad_y), flat(p), K, inner, flat(gx))
    return gx


def log_softmax_forward(x, axis):
    """log p = (x - m) - log sum e^(x - m) along ``axis``  (A12); any shape, x's shape out.

    NumPy twin: ``reference.log_softmax_forward``.  One thread per line along ``axis``.
    """
    who = "cuda log_softmax_forward"
    device_f32(x, who, "x")
    K, inner, lines = _lines(x.shape, int(axis), who)
    y = empty(x.shape, dtype=np.float32)
    if lines:
        log_softmax_forward_kernel[blocks(lines), THREADS](flat(x), flat(y), K, inner)
    return y


def log_softmax_backward(grad_y, y, axis):
    """dL/dx = g - e^y * sum_j g_j along ``axis``  (A13), from the saved output y = log p.

    NumPy twin: ``reference.log_softmax_backward``.
    """
    who = "cuda log_softmax_backward"
    device_f32(y, who, "y")
    device_f32(grad_y, who, "grad_y", shape=y.shape)
    K, inner, lines = _lines(y.shape, int(axis), who)
    gx = empty(y.shape, dtype=np.float32)
    if lines:
        log_softmax_backward_kernel[blocks(lines), THREADS](flat(grad_y), flat(y), K, inner, flat(gx))
    return gx


# --- accumulate and scale (derivations/01: (C3)) ----------------------------------------------------------

def _add_inplace(a, b):
    """a[i] += b[i]  (C3).  Twin: ``reference.add_``."""
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += b[i]  # (C3): the gradients of a value used twice add


def _scale(a, s_rows, s_step, s_scale, out):
    """out[i] = s_i * a[i], s read as s_rows[i * s_step] * s_scale.  Twin: ``reference.scale``."""
    i = cuda.grid(1)
    if i < a.shape[0]:
        out[i] = (s_rows[i * s_step] * s_scale) * a[i]  # one of the two factors is an exact 1.0


add_kernel = cuda.jit(_add_inplace)
scale_kernel = cuda.jit(_scale)


def add_(a, b):
    """a += b in place, element by element; returns a.  NumPy twin: ``reference.add_``  (C3)."""
    who = "cuda add_"
    device_f32(a, who, "a")
    device_f32(b, who, "b", shape=a.shape)
    if a.size:
        add_kernel[blocks(a.size), THREADS](flat(a), flat(b))
    return a


def scale(a, s):
    """s * a, a new array: s a number, a (1,) float32 device array, or an array of a's shape.

    NumPy twin: ``reference.scale``.  A (1,) device array is read on the GPU (no copy to the host).
    """
    who = "cuda scale"
    device_f32(a, who, "a")
    rows, step, factor = scalar_like(s, a.size, who)
    out = empty(a.shape, dtype=np.float32)
    if a.size:
        scale_kernel[blocks(a.size), THREADS](flat(a), rows, step, factor, flat(out))
    return out
