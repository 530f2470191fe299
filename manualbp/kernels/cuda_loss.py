"""Losses on the GPU: fused softmax-cross-entropy and mean squared error, forward and backward.

Derivations: derivations/02-softmax-cross-entropy.md (S1-S3, S7, S8),
derivations/07-regression-losses.md (R5, R6), derivations/11-gpu-tiled-matmul.md (syncthreads).

Cross-entropy with class-index targets (no class weights, no label smoothing: the CPU loss has
those).  Forward: one thread per row computes the softmax p (kept for backward) and the row's loss;
then one block adds the rows in a fixed order (``tree_sum``) and counts the rows that are not
ignored.  Backward: (p - onehot(y)) * g / D per element (S7, S8), where D, the number of counted
rows for 'mean', stays on the GPU: nothing is copied back to the host during a training step.

The upstream gradient ``grad_output`` is a Python float (1.0 for ``loss.backward()``), or a
float32 device array of shape (1,), or of the per-row/per-element loss's shape for 'none'.
"""
import math

import numpy as np
from numba import cuda, float32

from .cuda_elementwise import tree_sum
from .cuda_launch import THREADS, blocks, device_constant, device_f32, device_i64, flat, output, scalar_gradient

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, who):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: expected reduction to be one of {_REDUCTIONS}, got {reduction!r}")


# --- softmax + cross-entropy ----------------------------------------------------------------------------

def _xent_rows(z, target, ignore_index, probs, ell):
    """Row n: probs[n] = softmax(z[n]) and ell[n] = -log probs[n, y] (0 when y == ignore_index)."""
    n = cuda.grid(1)
    if n < z.shape[0]:
        classes = z.shape[1]
        m = z[n, 0]
        for c in range(1, classes):
            m = max(m, z[n, c])
        s = float32(0.0)
        for c in range(classes):
            e = math.exp(z[n, c] - m)  # z - m <= 0: no overflow (S1)
            probs[n, c] = e
            s += e
        inv = float32(1.0) / s
        for c in range(classes):
            probs[n, c] *= inv  # (S1)
        y = target[n]
        if y == ignore_index:
            ell[n] = float32(0.0)
        elif y < 0 or y >= classes:
            ell[n] = float32(math.nan)  # a bad class: NaN rather than a read outside the row
        else:
            ell[n] = math.log(s) - (z[n, y] - m)  # -log p_y by log-sum-exp (S2, S3)


def _xent_reduce(ell, target, ignore_index, mean, loss, denom):
    """One block: loss[0] = sum of ell (/ D for 'mean'), denom[0] = D, the number of counted rows (S8)."""
    buf = cuda.shared.array(THREADS, float32)
    t = cuda.threadIdx.x
    rows = ell.shape[0]
    part = float32(0.0)
    for e in range(t, rows, THREADS):  # a fixed order for a given size: deterministic
        part += ell[e]
    buf[t] = part
    total = tree_sum(buf)
    part = float32(0.0)
    for e in range(t, rows, THREADS):
        if target[e] != ignore_index:
            part += float32(1.0)
    buf[t] = part
    count = tree_sum(buf)
    if t == 0:
        if mean:
            loss[0] = total / count  # 0 / 0 = nan when every row is ignored, as in torch
            denom[0] = count
        else:
            loss[0] = total
            denom[0] = float32(1.0)


def _xent_backward(probs, target, ignore_index, g_rows, g_step, g_scale, denom, grad):
    """grad[n, c] = (p[n, c] - [c == y_n]) * g_n / D  (S7, S8); 0 for an ignored row."""
    i = cuda.grid(1)
    classes = probs.shape[1]
    if i < probs.shape[0] * classes:
        n = i // classes
        c = i - n * classes
        y = target[n]
        if y == ignore_index:
            grad[n, c] = float32(0.0)
        elif y < 0 or y >= classes:
            grad[n, c] = float32(math.nan)
        else:
            s = g_rows[n * g_step] * g_scale / denom[0]
            onehot = float32(1.0) if c == y else float32(0.0)
            grad[n, c] = (probs[n, c] - onehot) * s


cross_entropy_rows_kernel = cuda.jit(_xent_rows)
cross_entropy_reduce_kernel = cuda.jit(_xent_reduce)
cross_entropy_backward_kernel = cuda.jit(_xent_backward)


def cross_entropy_forward(logits, target, reduction="mean", ignore_index=-100):
    """(loss, probs, denom) of softmax + negative log-likelihood on (N, C) logits and (N,) int64 classes.

    NumPy twin: ``manualbp.nn.CrossEntropyLoss`` (class-index targets, no weight, no smoothing).
    loss: float32 device array (1,) for 'mean'/'sum', (N,) for 'none'.  probs (N, C) = softmax and
    denom (1,) = D of (S8) are what ``cross_entropy_backward`` needs.  A target outside [0, C) that
    is not ``ignore_index`` gives a NaN loss (the device cannot raise).
    """
    who = "cuda cross_entropy_forward"
    _check_reduction(reduction, who)
    device_f32(logits, who, "logits", ndim=2)
    rows, classes = logits.shape
    device_i64(target, who, "target", shape=(rows,))
    if classes < 1:
        raise ValueError(f"{who}: expected at least one class, got logits of shape {tuple(logits.shape)}")
    probs = cuda.device_array((rows, classes), dtype=np.float32)
    ell = cuda.device_array(rows, dtype=np.float32)
    if rows:
        cross_entropy_rows_kernel[blocks(rows), THREADS](logits, target, int(ignore_index), probs, ell)
    if reduction == "none":
        return ell, probs, device_constant(1.0)
    loss = cuda.device_array(1, dtype=np.float32)
    denom = cuda.device_array(1, dtype=np.float32)
    cross_entropy_reduce_kernel[1, THREADS](ell, target, int(ignore_index), reduction == "mean", loss, denom)
    return loss, probs, denom


def cross_entropy_backward(probs, target, denom, grad_output=1.0, ignore_index=-100, out=None):
    """dL/dlogits (N, C) = (softmax - onehot(target)) * grad_output / D  (S7, S8).

    NumPy twin: ``manualbp.nn.CrossEntropyLoss.backward``.  ``probs`` and ``denom`` come from
    ``cross_entropy_forward``; ``grad_output`` as described in the module docstring.
    """
    who = "cuda cross_entropy_backward"
    device_f32(probs, who, "probs", ndim=2)
    rows, classes = probs.shape
    device_i64(target, who, "target", shape=(rows,))
    device_f32(denom, who, "denom", shape=(1,))
    g_rows, g_step, g_scale = scalar_gradient(grad_output, rows, who)
    grad = output(out, (rows, classes), who)
    if grad.size:
        cross_entropy_backward_kernel[blocks(grad.size), THREADS](
            probs, target, int(ignore_index), g_rows, g_step, g_scale, denom, grad)
    return grad


# --- mean squared error -----------------------------------------------------------------------------------

def _mse_none(x, t, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        d = x[i] - t[i]
        out[i] = d * d  # (R5)


def _mse_reduce(x, t, divisor, out):
    """One block: out[0] = sum (x - t)^2 / divisor, added in a fixed order (divisor = numel for 'mean')."""
    buf = cuda.shared.array(THREADS, float32)
    k = cuda.threadIdx.x
    part = float32(0.0)
    for e in range(k, x.shape[0], THREADS):
        d = x[e] - t[e]
        part += d * d  # (R5)
    buf[k] = part
    total = tree_sum(buf)
    if k == 0:
        out[0] = total / divisor


def _mse_backward(x, t, g_rows, g_step, g_scale, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        out[i] = float32(2.0) * (x[i] - t[i]) * (g_rows[i * g_step] * g_scale)  # (R6)


mse_none_kernel = cuda.jit(_mse_none)
mse_reduce_kernel = cuda.jit(_mse_reduce)
mse_backward_kernel = cuda.jit(_mse_backward)


def mse_forward(x, target, reduction="mean"):
    """(x - target)^2, averaged ('mean'), added ('sum') or kept per element ('none')  (R5).

    NumPy twin: ``manualbp.nn.MSELoss``.  Float32 device arrays of one shape; returns a device
    array of shape (1,), or of x's shape for 'none'.
    """
    who = "cuda mse_forward"
    _check_reduction(reduction, who)
    device_f32(x, who, "input")
    device_f32(target, who, "target", shape=x.shape)
    if reduction == "none":
        out = cuda.device_array(x.shape, dtype=np.float32)
        if x.size:
            mse_none_kernel[blocks(x.size), THREADS](flat(x), flat(target), flat(out))
        return out
    out = cuda.device_array(1, dtype=np.float32)
    divisor = np.float32(x.size if reduction == "mean" else 1)
    mse_reduce_kernel[1, THREADS](flat(x), flat(target), divisor, out)
    return out


def mse_backward(x, target, reduction="mean", grad_output=1.0, out=None):
    """dL/dx = 2 (x - target) * grad_output, divided by numel for 'mean'  (R6).

    NumPy twin: ``manualbp.nn.MSELoss.backward``.  ``grad_output``: see the module docstring.
    """
    who = "cuda mse_backward"
    _check_reduction(reduction, who)
    device_f32(x, who, "input")
    device_f32(target, who, "target", shape=x.shape)
    g_rows, g_step, g_scale = scalar_gradient(grad_output, x.size, who)
    if reduction == "mean" and x.size:
        g_scale = np.float32(g_scale / np.float32(x.size))
    grad = output(out, x.shape, who)
    if x.size:
        mse_backward_kernel[blocks(x.size), THREADS](flat(x), flat(target), g_rows, g_step, g_scale, flat(grad))
    return grad
