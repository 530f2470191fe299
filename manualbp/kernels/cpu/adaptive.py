"""The adaptive optimizers' updates on the CPU: one compiled loop over a parameter's elements each.

Derivation: derivations/12-adaptive-optimizers.md (D1)-(D14); readable twins in
``kernels/reference_adaptive.py`` (``tests/test_optim_adaptive.py`` holds them equal, bit for bit).  As
for SGD (``optim.py``), one loop reads and writes each buffer once instead of a handful of NumPy
temporaries per array; it runs on the calling thread only.  The scalars that depend on the step alone
come from the reference's ``adam_scalars`` / ``adagrad_lr`` (float64, torch's order), then are cast to p's
dtype.

Legend: a parameter, its gradient and its buffers are flat (P,) vectors.
"""
import numpy as np
from numba import njit

from ..reference_adaptive import adagrad_lr, adam_scalars

_NO_BUFFER = {}  # a 0-length stand-in for an unused buffer, one per dtype


def _flat(a, dtype):
    """a flat view of a C-contiguous buffer, or the 0-length stand-in for None."""
    if a is None:
        empty = _NO_BUFFER.get(dtype.str)
        if empty is None:
            empty = _NO_BUFFER[dtype.str] = np.empty(0, dtype=dtype)
        return empty
    return a.reshape(-1)


# No fast-math: each line should round exactly as the NumPy expression of its twin.
@njit(cache=True)
def _adam_update(p, g, m, v, vmax, wd, decay, w1, small, beta2, one_minus_beta2, eps, neg_step_size, bc2_sqrt,
                 amsgrad, decoupled):
    """One Adam step on flat p (P,), in place, with torch's order of operations (D1)-(D8).

    w1 = 1 - beta1 is the lerp weight of (D1); ``small`` says |w1| < 0.5 (torch's lerp then computes
    m + w1 (g - m), otherwise g - (g - m)(1 - w1)).  decay = 1 - lr * weight_decay (AdamW's (D7)).
    """
    one = p.dtype.type(1)
    for i in range(p.shape[0]):
        d = g[i]
        if wd != 0:
            if decoupled:
                p[i] = p[i] * decay  # (D7)
            else:
                d = d + wd * p[i]  # (D6)
        if small:
            mi = m[i] + w1 * (d - m[i])  # (D1)
        else:
            mi = d - (d - m[i]) * (one - w1)
        m[i] = mi
        vi = v[i] * beta2
        vi = vi + one_minus_beta2 * d * d  # (D2)
        v[i] = vi
        if amsgrad:
            if np.isnan(vi) or vi > vmax[i]:  # the larger, NaN winning as in torch.maximum (D8)
                vmax[i] = vi
            vi = vmax[i]
        denom = np.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] + neg_step_size * mi / denom  # (D5)


def adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, amsgrad,
                decoupled):
    """One Adam/AdamW step, in place.  Twin of reference.adam_update; see its docstring.

    p and the buffers must be C-contiguous (updated through flat views); every scalar goes in p's dtype,
    so the kernel compiles once per dtype whatever the shapes.
    """
    t = p.dtype.type
    step_size, bc2_sqrt = adam_scalars(lr, beta1, beta2, step)
    w1 = 1 - beta1
    _adam_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), exp_avg.reshape(-1),
                 exp_avg_sq.reshape(-1), _flat(max_exp_avg_sq if amsgrad else None, p.dtype), t(weight_decay),
                 t(1 - lr * weight_decay), t(w1), abs(w1) < 0.5, t(beta2), t(1 - beta2), t(eps), t(-step_size),
                 t(bc2_sqrt), bool(amsgrad), bool(decoupled))


@njit(cache=True)
def _rmsprop_update(p, g, sq, gavg, buf, wd, alpha, w, small, eps, neg_lr, mu, centered, use_momentum):
    """One RMSprop step on flat p (P,), in place, with torch's order of operations (D9)-(D12).
    w = 1 - alpha is the lerp weight of the centered mean (D10), ``small`` says |w| < 0.5."""
    one = p.dtype.type(1)
    for i in range(p.shape[0]):
        d = g[i]
        if wd != 0:
            d = d + wd * p[i]
        s = sq[i] * alpha
        s = s + w * d * d  # (D9)
        sq[i] = s
        if centered:
            if small:
                a = gavg[i] + w * (d - gavg[i])  # (D10)
            else:
                a = d - (d - gavg[i]) * (one - w)
            gavg[i] = a
            avg = np.sqrt(s + -one * a * a)
        else:
            avg = np.sqrt(s)
        avg = avg + eps
        if use_momentum:
            b = buf[i] * mu
            b = b + d / avg  # (D12)
            buf[i] = b
            p[i] = p[i] + neg_lr * b
        else:
            p[i] = p[i] + neg_lr * d / avg  # (D11)


def rmsprop_update(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
    """One RMSprop step, in place.  Twin of reference.rmsprop_update; see its docstring."""
    t = p.dtype.type
    w = 1 - alpha
    _rmsprop_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), square_avg.reshape(-1),
                    _flat(grad_avg if centered else None, p.dtype),
                    _flat(momentum_buffer if momentum > 0 else None, p.dtype), t(weight_decay), t(alpha), t(w),
                    abs(w) < 0.5, t(eps), t(-lr), t(momentum), bool(centered), momentum > 0)


@njit(cache=True)
def _adagrad_update(p, g, s, wd, eps, neg_clr):
    """One Adagrad step on flat p (P,), in place, with torch's order of operations (D13), (D14)."""
    one = p.dtype.type(1)
    for i in range(p.shape[0]):
        d = g[i]
        if wd != 0:
            d = d + wd * p[i]
        si = s[i] + one * d * d  # (D14)
        s[i] = si
        p[i] = p[i] + neg_clr * d / (np.sqrt(si) + eps)  # (D13)


def adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay, eps, step):
    """One Adagrad step, in place.  Twin of reference.adagrad_update; see its docstring."""
    t = p.dtype.type
    _adagrad_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), state_sum.reshape(-1),
                    t(weight_decay), t(eps), t(-adagrad_lr(lr, lr_decay, step)))


__all__ = ["adagrad_update", "adam_update", "rmsprop_update"]
