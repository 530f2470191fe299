"""The adaptive optimizers' updates on the GPU: one thread per element of a parameter, float32.

Derivation: derivations/12-adaptive-optimizers.md (D1)-(D14).  NumPy twins: ``kernels/reference_adaptive.py``
(the same arguments in the same order).  The scalars that depend on the step alone are computed on the
host in float64, in torch's order (``reference_adaptive.adam_scalars`` / ``adagrad_lr``), then passed as
float32; every literal inside a kernel is float32, so the PTX holds no float64 instruction.
"""
import math

import numpy as np
from numba import cuda, float32

from ..reference_adaptive import adagrad_lr, adam_scalars
from .launch import THREADS, blocks, device_f32, flat, optional_f32


def _adam_update(p, g, m, v, vmax, wd, decay, w1, small, beta2, one_minus_beta2, eps, neg_step_size, bc2_sqrt,
                 amsgrad, decoupled):
    """One torch.optim.Adam/AdamW step for one element (D1)-(D8); vmax is read only with amsgrad."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if wd != float32(0.0):
            if decoupled:
                p[i] = p[i] * decay  # (D7)
            else:
                d = d + wd * p[i]  # (D6)
        if small:
            mi = m[i] + w1 * (d - m[i])  # (D1)
        else:
            mi = d - (d - m[i]) * (float32(1.0) - w1)
        m[i] = mi
        vi = v[i] * beta2
        vi = vi + one_minus_beta2 * d * d  # (D2)
        v[i] = vi
        if amsgrad:
            if math.isnan(vi) or vi > vmax[i]:  # (D8), NaN winning as in torch.maximum
                vmax[i] = vi
            vi = vmax[i]
        denom = math.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] + neg_step_size * mi / denom  # (D5)


def _rmsprop_update(p, g, sq, gavg, buf, wd, alpha, w, small, eps, neg_lr, mu, centered, use_momentum):
    """One torch.optim.RMSprop step for one element (D9)-(D12); gavg/buf read only when used."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if wd != float32(0.0):
            d = d + wd * p[i]
        s = sq[i] * alpha
        s = s + w * d * d  # (D9)
        sq[i] = s
        if centered:
            if small:
                a = gavg[i] + w * (d - gavg[i])  # (D10)
            else:
                a = d - (d - gavg[i]) * (float32(1.0) - w)
            gavg[i] = a
            avg = math.sqrt(s + float32(-1.0) * a * a)
        else:
            avg = math.sqrt(s)
        avg = avg + eps
        if use_momentum:
            b = buf[i] * mu
            b = b + d / avg  # (D12)
            buf[i] = b
            p[i] = p[i] + neg_lr * b
        else:
            p[i] = p[i] + neg_lr * d / avg  # (D11)


def _adagrad_update(p, g, s, wd, eps, neg_clr):
    """One torch.optim.Adagrad step for one element (D13), (D14)."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if wd != float32(0.0):
            d = d + wd * p[i]
        si = s[i] + float32(1.0) * d * d  # (D14)
        s[i] = si
        p[i] = p[i] + neg_clr * d / (math.sqrt(si) + eps)  # (D13)


adam_update_kernel = cuda.jit(_adam_update)
rmsprop_update_kernel = cuda.jit(_rmsprop_update)
adagrad_update_kernel = cuda.jit(_adagrad_update)
f32 = np.float32


def adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, amsgrad,
                decoupled):
    """One Adam/AdamW step on float32 device arrays, in place; twin of ``reference.adam_update``.  Returns p."""
    who = "cuda adam_update"
    device_f32(p, who, "p")
    for name, a in (("g", g), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        device_f32(a, who, name, shape=p.shape)
    vmax = optional_f32(max_exp_avg_sq if amsgrad else None, who, "max_exp_avg_sq", p.shape)
    step_size, bc2_sqrt = adam_scalars(lr, beta1, beta2, step)
    w1 = 1 - beta1
    if p.size:
        adam_update_kernel[blocks(p.size), THREADS](
            flat(p), flat(g), flat(exp_avg), flat(exp_avg_sq), vmax, f32(weight_decay), f32(1 - lr * weight_decay),
            f32(w1), abs(w1) < 0.5, f32(beta2), f32(1 - beta2), f32(eps), f32(-step_size), f32(bc2_sqrt),
            bool(amsgrad), bool(decoupled))
    return p


def rmsprop_update(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
    """One RMSprop step on float32 device arrays, in place; twin of ``reference.rmsprop_update``.  Returns p."""
    who = "cuda rmsprop_update"
    device_f32(p, who, "p")
    device_f32(g, who, "g", shape=p.shape)
    device_f32(square_avg, who, "square_avg", shape=p.shape)
    gavg = optional_f32(grad_avg if centered else None, who, "grad_avg", p.shape)
    buf = optional_f32(momentum_buffer if momentum > 0 else None, who, "momentum_buffer", p.shape)
    w = 1 - alpha
    if p.size:
        rmsprop_update_kernel[blocks(p.size), THREADS](
            flat(p), flat(g), flat(square_avg), gavg, buf, f32(weight_decay), f32(alpha), f32(w), abs(w) < 0.5,
            f32(eps), f32(-lr), f32(momentum), bool(centered), momentum > 0)
    return p


def adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay, eps, step):
    """One Adagrad step on float32 device arrays, in place; twin of ``reference.adagrad_update``.  Returns p."""
    who = "cuda adagrad_update"
    device_f32(p, who, "p")
    device_f32(g, who, "g", shape=p.shape)
    device_f32(state_sum, who, "state_sum", shape=p.shape)
    if p.size:
        adagrad_update_kernel[blocks(p.size), THREADS](
            flat(p), flat(g), flat(state_sum), f32(weight_decay), f32(eps), f32(-adagrad_lr(lr, lr_decay, step)))
    return p


__all__ = ["adagrad_update", "adam_update", "rmsprop_update"]
