"""Losses on the GPU: the reduction, the regression losses and binary cross-entropy, forward and backward.

Derivations: derivations/07-regression-losses.md ((R1)-(R10)), derivations/08-binary-cross-entropy.md
((B1)-(B6)), derivations/11-gpu-tiled-matmul.md (syncthreads).  NumPy twins: ``kernels/reference_loss.py``,
function by function, with the same names and arguments; the class losses are in ``loss_class.py``.

A loss runs in the three steps of ``reference_loss.py``, every one on the device:

    ell = <loss>(input, target, ...)          one thread per element                    (R3) ... (B4)
    L   = loss_reduce(ell, reduction, D)      one block, a fixed-order sum: a (1,) array (R1)
    s   = loss_upstream(g, reduction, D)      g / D for 'mean', one thread: a (1,) array (R2)
    dL/d(input) = <loss>_backward(s, ...)     one thread per element

``D`` and ``s`` are "scalar-like": a Python or NumPy number, or a float32 device array of shape (1,)
read inside the kernel (so the count D of the class losses never visits the host); ``s`` may also be
an array of ell's shape ('none').  A kernel reads s for element i as ``s_rows[i * s_step] * s_scale``
(``launch.scalar_like``): step 0 broadcasts one value, and the factor that is not s is an exact 1.0.

Each family is one kernel with an int ``kind``: the four regression losses (0 L1, 1 MSE, 2 smooth L1,
3 Huber) and the two binary cross-entropies (0 on probabilities, 1 on logits), forward and backward,
so that a few kernels compile instead of twelve.  Optional weights (``w``, ``pos_weight``, already
broadcast to the input's shape) travel as float32 arrays with no elements when absent.
"""
import math

import numpy as np
from numba import cuda, float32

from .buffers import empty
from .elementwise import tree_sum
from .launch import THREADS, blocks, device_f32, flat, optional_f32, scalar_like

L1, MSE, SMOOTH_L1, HUBER = 0, 1, 2, 3  # the regression kernels' kind
BCE, BCE_LOGITS = 0, 1  # the binary cross-entropy kernels' kind

# --- the reduction (R1) and the upstream gradient (R2) ----------------------------------------------------


def _loss_sum(ell, d_rows, d_scale, mean, out):
    """One block: out[0] = sum of ell, divided by D = d_rows[0] * d_scale for 'mean'  (R1).
    Twin: ``reference.loss_reduce``.

    Thread t adds ell[t], ell[t + THREADS], ... in order, then ``tree_sum`` halves the partial sums:
    the order depends on the size only, so the loss is the same bit for bit on every run.  0 / 0 is
    nan, as in torch (every sample ignored).
    """
    buf = cuda.shared.array(THREADS, float32)
    t = cuda.threadIdx.x
    part = float32(0.0)
    for e in range(t, ell.shape[0], THREADS):
        part += ell[e]
    buf[t] = part
    total = tree_sum(buf)  # every thread of the block calls it: it synchronises them
    if t == 0:
        out[0] = total / (d_rows[0] * d_scale) if mean else total


def _scalar_divide(g_rows, g_scale, d_rows, d_scale, out):
    """out[0] = g / D  (R2), both read on the device; one thread.  Twin: ``reference.loss_upstream``."""
    if cuda.grid(1) == 0:
        out[0] = (g_rows[0] * g_scale) / (d_rows[0] * d_scale)


loss_sum_kernel = cuda.jit(_loss_sum)
scalar_divide_kernel = cuda.jit(_scalar_divide)

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, who):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: expected reduction to be one of {_REDUCTIONS}, got {reduction!r}")


def sum_to_device(ell, who, denom=None):
    """sum(ell), or sum(ell) / denom when ``denom`` is given, as a float32 device array of shape (1,)."""
    mean = denom is not None
    d_rows, _, d_scale = scalar_like(denom if mean else 1.0, 1, who, "denom")
    out = empty(1, dtype=np.float32)
    loss_sum_kernel[1, THREADS](flat(ell), d_rows, d_scale, mean, out)
    return out


def loss_reduce(ell, reduction, denom):
    """(R1): ell itself for 'none'; else a (1,) float32 device array, sum(ell) ('sum') or sum(ell) / denom.

    NumPy twin: ``reference.loss_reduce``.  ``denom``: scalar-like (see the module docstring).
    """
    who = "cuda loss_reduce"
    _check_reduction(reduction, who)
    device_f32(ell, who, "ell")
    if reduction == "none":
        return ell
    return sum_to_device(ell, who, denom if reduction == "mean" else None)


def loss_upstream(grad, reduction, denom):
    """(R2): dL/d(ell) from ``grad`` = dL/dL.  'mean': a (1,) device array holding grad / denom;
    otherwise ``grad`` unchanged (a scalar-like for 'sum', an array of ell's shape for 'none').

    NumPy twin: ``reference.loss_upstream``.  grad and denom: scalar-like; nothing goes to the host.
    """
    who = "cuda loss_upstream"
    _check_reduction(reduction, who)
    if reduction != "mean":
        return grad
    g_rows, _, g_scale = scalar_like(grad, 1, who, "grad")
    d_rows, _, d_scale = scalar_like(denom, 1, who, "denom")
    out = empty(1, dtype=np.float32)
    scalar_divide_kernel[1, 1](g_rows, g_scale, d_rows, d_scale, out)
    return out


# --- regression losses: ell of d = x - t, element by element (derivations/07) ----------------------------


@cuda.jit(device=True, inline=True)
def _sign(d):
    """sign(d) as float32: 0 at 0, and nan stays nan (as np.sign)."""
    if d > float32(0.0):
        return float32(1.0)
    if d < float32(0.0):
        return float32(-1.0)
    return d


def _regression_forward(x, t, kind, param, ell):
    """ell[i] of d = x[i] - t[i]: |d| (R3), d^2 (R5), smooth L1 with beta = param (R7), Huber with
    delta = param (R9).  Twins: ``reference.l1_loss``, ``mse_loss``, ``smooth_l1_loss``, ``huber_loss``."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        d = x[i] - t[i]
        half = float32(0.5)
        if kind == 0:
            v = abs(d)  # (R3)
        elif kind == 1:
            v = d * d  # (R5)
        elif kind == 2:
            v = half * d * d / param if abs(d) < param else abs(d) - half * param  # (R7); beta = 0 is L1
        else:
            v = half * d * d if abs(d) < param else param * (abs(d) - half * param)  # (R9)
        ell[i] = v


def _regression_backward(s_rows, s_step, s_scale, x, t, kind, param, grad):
    """grad[i] = s_i * d(ell)/dx  (R2): s sign(d) (R4), s 2d (R6), s (d / beta or sign d) (R8),
    s (d or delta sign d) (R10).  Twins: ``reference.<loss>_backward`` of the four."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        d = x[i] - t[i]
        if kind == 0:
            slope = _sign(d)  # (R4)
        elif kind == 1:
            slope = float32(2.0) * d  # (R6)
        elif kind == 2:
            slope = d / param if abs(d) < param else _sign(d)  # (R8)
        else:
            slope = d if abs(d) < param else param * _sign(d)  # (R10)
        grad[i] = (s_rows[i * s_step] * s_scale) * slope


regression_forward_kernel = cuda.jit(_regression_forward)
regression_backward_kernel = cuda.jit(_regression_backward)


def _pair(x, t, who):
    device_f32(x, who, "x")
    device_f32(t, who, "t", shape=x.shape)


def _regression(kind, param, x, t, who):
    _pair(x, t, who)
    ell = empty(x.shape, dtype=np.float32)
    if x.size:
        regression_forward_kernel[blocks(x.size), THREADS](flat(x), flat(t), kind, np.float32(param), flat(ell))
    return ell


def _regression_grad(kind, param, s, x, t, who):
    _pair(x, t, who)
    s_rows, s_step, s_scale = scalar_like(s, x.size, who)
    grad = empty(x.shape, dtype=np.float32)
    if x.size:
        regression_backward_kernel[blocks(x.size), THREADS](s_rows, s_step, s_scale, flat(x), flat(t), kind,
                                                             np.float32(param), flat(grad))
    return grad


def l1_loss(x, t):
    """ell = |x - t|  (R3).  NumPy twin: ``reference.l1_loss``."""
    return _regression(L1, 0.0, x, t, "cuda l1_loss")


def l1_loss_backward(s, x, t):
    """s * sign(x - t)  (R2)(R4), sign(0) = 0.  NumPy twin: ``reference.l1_loss_backward``."""
    return _regression_grad(L1, 0.0, s, x, t, "cuda l1_loss_backward")


def mse_loss(x, t):
    """ell = (x - t)^2  (R5).  NumPy twin: ``reference.mse_loss``."""
    return _regression(MSE, 0.0, x, t, "cuda mse_loss")


def mse_loss_backward(s, x, t):
    """s * 2 (x - t)  (R2)(R6).  NumPy twin: ``reference.mse_loss_backward``."""
    return _regression_grad(MSE, 0.0, s, x, t, "cuda mse_loss_backward")


def smooth_l1_loss(x, t, beta):
    """ell = 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta  (R7).  NumPy twin: ``reference.smooth_l1_loss``."""
    return _regression(SMOOTH_L1, beta, x, t, "cuda smooth_l1_loss")


def smooth_l1_loss_backward(s, x, t, beta):
    """s * (d / beta inside, sign(d) outside)  (R2)(R8).  NumPy twin: ``reference.smooth_l1_loss_backward``."""
    return _regression_grad(SMOOTH_L1, beta, s, x, t, "cuda smooth_l1_loss_backward")


def huber_loss(x, t, delta):
    """ell = 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)  (R9).  NumPy twin: ``reference.huber_loss``."""
    return _regression(HUBER, delta, x, t, "cuda huber_loss")


def huber_loss_backward(s, x, t, delta):
    """s * (d inside, delta sign(d) outside)  (R2)(R10).  NumPy twin: ``reference.huber_loss_backward``."""
    return _regression_grad(HUBER, delta, s, x, t, "cuda huber_loss_backward")


# --- binary cross-entropy (derivations/08) ----------------------------------------------------------------


def _bce_forward(x, t, w, pw, kind, ell):
    """kind 0: ell = -w [t max(log x, -100) + (1 - t) max(log(1 - x), -100)]  (B1);
    kind 1 (x = logits z): ell = w [(1 - t) z - (1 + (pw - 1) t) log s(z)]  (B4), log s(z) by (B3).
    w, pw: x's length, or no elements for "none".  Twins: ``reference.bce_loss``, ``bce_with_logits_loss``."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        one = float32(1.0)
        v = x[i]
        ti = t[i]
        if kind == 0:
            floor = float32(-100.0)
            # log 0 = -inf, clamped at -100; the ends are tested first (the simulator's math.log raises at 0)
            log_x = floor if v == float32(0.0) else max(math.log(v), floor)
            log_1mx = floor if v == float32(1.0) else max(math.log1p(-v), floor)  # log(1 - x), accurate for small x
            e = (ti - one) * log_1mx - ti * log_x  # (B1)
        else:
            log_s = min(v, float32(0.0)) - math.log1p(math.exp(-abs(v)))  # (B3): no exponent overflows
            if pw.shape[0] > 0:
                log_s = log_s * (one + (pw[i] - one) * ti)
            e = (one - ti) * v - log_s  # (B4)
        if w.shape[0] > 0:
            e = e * w[i]
        ell[i] = e


def _bce_backward(s_rows, s_step, s_scale, x, t, w, pw, kind, grad):
    """kind 0: s w (x - t) / max(x (1 - x), 1e-12)  (B2); kind 1: s w [(1 + (pw - 1) t) s(z) - pw t]  (B5),
    s(z) by (B6): s (s(z) - t) without weights.  Twins: ``reference.bce_loss_backward``,
    ``bce_with_logits_loss_backward``."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        one = float32(1.0)
        v = x[i]
        ti = t[i]
        if kind == 0:
            g = (v - ti) / max((one - v) * v, float32(1e-12))  # (B2), torch's EPSILON
        else:
            e = math.exp(-abs(v))
            sig = one / (one + e) if v >= float32(0.0) else e / (one + e)  # (B6)
            if pw.shape[0] > 0:
                pt = pw[i] * ti
                g = (pt + one - ti) * sig - pt  # (B5)
            else:
                g = sig - ti
        if w.shape[0] > 0:
            g = g * w[i]
        grad[i] = (s_rows[i * s_step] * s_scale) * g


bce_forward_kernel = cuda.jit(_bce_forward)
bce_backward_kernel = cuda.jit(_bce_backward)


def _bce(kind, x, t, w, pw, who):
    _pair(x, t, who)
    w_, pw_ = optional_f32(w, who, "w", x.shape), optional_f32(pw, who, "pw", x.shape)
    ell = empty(x.shape, dtype=np.float32)
    if x.size:
        bce_forward_kernel[blocks(x.size), THREADS](flat(x), flat(t), w_, pw_, kind, flat(ell))
    return ell


def _bce_grad(kind, s, x, t, w, pw, who):
    _pair(x, t, who)
    w_, pw_ = optional_f32(w, who, "w", x.shape), optional_f32(pw, who, "pw", x.shape)
    s_rows, s_step, s_scale = scalar_like(s, x.size, who)
    grad = empty(x.shape, dtype=np.float32)
    if x.size:
        bce_backward_kernel[blocks(x.size), THREADS](s_rows, s_step, s_scale, flat(x), flat(t), w_, pw_, kind,
                                                      flat(grad))
    return grad


def bce_loss(x, t, w):
    """ell = -w [t log x + (1 - t) log(1 - x)], each log clamped at -100  (B1).  NumPy twin: ``reference.bce_loss``."""
    return _bce(BCE, x, t, w, None, "cuda bce_loss")


def bce_loss_backward(s, x, t, w):
    """s w (x - t) / max(x (1 - x), eps)  (B2).  NumPy twin: ``reference.bce_loss_backward``."""
    return _bce_grad(BCE, s, x, t, w, None, "cuda bce_loss_backward")


def bce_with_logits_loss(z, t, w, pw):
    """ell = w [(1 - t) z - (1 + (pw - 1) t) log s(z)]  (B3)(B4).  NumPy twin: ``reference.bce_with_logits_loss``."""
    return _bce(BCE_LOGITS, z, t, w, pw, "cuda bce_with_logits_loss")


def bce_with_logits_loss_backward(s, z, t, w, pw):
    """s w [(1 + (pw - 1) t) s(z) - pw t]  (B5)(B6).  NumPy twin: ``reference.bce_with_logits_loss_backward``."""
    return _bce_grad(BCE_LOGITS, s, z, t, w, pw, "cuda bce_with_logits_loss_backward")
