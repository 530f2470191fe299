"""The adaptive optimizers' updates in plain NumPy: Adam/AdamW, RMSprop, Adagrad, each as torch.optim
computes it (the single-tensor loops of torch/optim/adam.py, rmsprop.py, adagrad.py), one parameter at a time.

Derivation: derivations/12-adaptive-optimizers.md (D1)-(D14).  Twins: ``kernels/cpu/adaptive.py`` (bit
for bit) and ``kernels/cuda/adaptive.py`` (float32).

The scalars that depend only on the step (bias corrections, the decayed learning rate) are computed once
on the host, in float64 and in torch's order, by the ``*_scalars`` functions below; the three
implementations share them, so only the per-element arithmetic is written three times.  Every scalar is
cast to p's dtype before it meets an array, so a float32 parameter is updated in float32 (as torch does).
"""
import numpy as np


def adam_scalars(lr, beta1, beta2, step):
    """(step_size, bias_correction2_sqrt) at step t >= 1, as torch computes them:
    lr / (1 - beta1**t) and (1 - beta2**t) ** 0.5.  (D4), (D5)"""
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    return lr / bias_correction1, bias_correction2 ** 0.5


def adagrad_lr(lr, lr_decay, step):
    """Adagrad's learning rate at step t >= 1: lr / (1 + (t - 1) * lr_decay).  (D13)"""
    return lr / (1 + (step - 1) * lr_decay)


def lerp_(a, b, weight):
    """a <- a + weight * (b - a) in place, rounded as torch's ``lerp_``: for |weight| >= 0.5 it computes
    b - (b - a) * (1 - weight) instead, which is exact at weight 1.  (D1)"""
    t = a.dtype.type
    if abs(weight) < 0.5:
        a += t(weight) * (b - a)
    else:
        a[...] = b - (b - a) * (t(1) - t(weight))


def adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, amsgrad,
                decoupled):
    """One step of Adam (AdamW when ``decoupled``) on a parameter, in place, as torch.optim.Adam.  (D1)-(D8)

    Derivation: derivations/12-adaptive-optimizers.md.

    Inputs:
    - p: the parameter's values, any shape, updated in place
    - g: dL/dp, p's shape (not modified)
    - exp_avg, exp_avg_sq: the first and second moments m and v, p's shape, updated in place (zeros
      before the first step)
    - max_exp_avg_sq: the running maximum of v (amsgrad), updated in place; None without amsgrad
    - lr, beta1, beta2, eps, weight_decay: floats; step: t >= 1, this step's number (counted from 1)
    - amsgrad: divide by the largest v so far; decoupled: AdamW's weight decay, theta <- theta (1 - lr lambda)
    """
    t = p.dtype.type
    if weight_decay != 0:
        if decoupled:
            p *= t(1 - lr * weight_decay)  # (D7)
        else:
            g = g + t(weight_decay) * p  # (D6)
    lerp_(exp_avg, g, 1 - beta1)  # m <- beta1 m + (1 - beta1) g  (D1)
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1 - beta2) * g * g  # v <- beta2 v + (1 - beta2) g^2  (D2)
    step_size, bias_correction2_sqrt = adam_scalars(lr, beta1, beta2, step)
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # (D8)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / t(bias_correction2_sqrt) + t(eps)
    p += t(-step_size) * exp_avg / denom  # theta <- theta - lr m_hat / (sqrt(v_hat) + eps)  (D5)


def rmsprop_update(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
    """One step of RMSprop on a parameter, in place, as torch.optim.RMSprop.  (D9)-(D12)

    Derivation: derivations/12-adaptive-optimizers.md.

    Inputs:
    - p, g: the parameter (updated in place) and dL/dp
    - square_avg: the running mean of g^2, p's shape, updated in place (zeros before the first step)
    - grad_avg: the running mean of g when ``centered`` (updated in place), else None
    - momentum_buffer: the momentum buffer when momentum > 0 (updated in place), else None
    - lr, alpha, eps, weight_decay, momentum: floats; centered: bool
    """
    t = p.dtype.type
    if weight_decay != 0:
        g = g + t(weight_decay) * p
    square_avg *= t(alpha)
    square_avg += t(1 - alpha) * g * g  # (D9)
    if centered:
        lerp_(grad_avg, g, 1 - alpha)  # (D10)
        avg = np.sqrt(square_avg + t(-1) * grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg = avg + t(eps)
    if momentum > 0:
        momentum_buffer *= t(momentum)
        momentum_buffer += g / avg  # (D12)
        p += t(-lr) * momentum_buffer
    else:
        p += t(-lr) * g / avg  # (D11)


def adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay, eps, step):
    """One step of Adagrad on a parameter, in place, as torch.optim.Adagrad.  (D13), (D14)

    Derivation: derivations/12-adaptive-optimizers.md.

    Inputs:
    - p, g: the parameter (updated in place) and dL/dp
    - state_sum: the sum of every g^2 so far (torch's ``sum``), p's shape, updated in place
    - lr, lr_decay, weight_decay, eps: floats; step: t >= 1, this step's number
    """
    t = p.dtype.type
    if weight_decay != 0:
        g = g + t(weight_decay) * p
    state_sum += t(1) * g * g  # (D14)
    std = np.sqrt(state_sum) + t(eps)
    p += t(-adagrad_lr(lr, lr_decay, step)) * g / std  # (D13)


__all__ = ["adagrad_lr", "adagrad_update", "adam_scalars", "adam_update", "rmsprop_update"]
