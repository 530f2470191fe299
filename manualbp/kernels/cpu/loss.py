"""The losses on the CPU: the fused softmax-cross-entropy of a training step, compiled by Numba; the
other losses are the NumPy twins of ``reference_loss.py`` (one vectorized pass each).

Derivation: derivations/02-softmax-cross-entropy.md (S1), (S2), (S3), (S7), (S8); readable twin:
``reference.cross_entropy_index`` (``tests/test_kernels.py`` holds them equal).

A LeNet-5 step has 10 logits per image, so there is little arithmetic here; but written as a dozen NumPy
expressions the loss costs more than a convolution at batch 1 (every NumPy call allocates its result and
pays a few microseconds of Python).  One compiled loop does the same arithmetic without temporaries.  It
runs on the calling thread only, so nothing depends on the thread count.

Legend: N batch, C classes.
"""
import numpy as np
from numba import njit

from ..reference_loss import (
    bce_loss,
    bce_loss_backward,
    bce_with_logits_loss,
    bce_with_logits_loss_backward,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_probs,
    cross_entropy_probs_backward,
    huber_loss,
    huber_loss_backward,
    l1_loss,
    l1_loss_backward,
    loss_reduce,
    loss_upstream,
    mse_loss,
    mse_loss_backward,
    nll_loss,
    nll_loss_backward,
    smooth_l1_loss,
    smooth_l1_loss_backward,
)


# No fast-math here: the loss must see NaN and infinity (a NaN logit gives a NaN loss, as in
# torch, and Network.fit stops on it), and each line should round as the NumPy expression of its twin.
@njit(cache=True)
def _cross_entropy_index(z, t, ignore_index, grad):
    """Softmax-cross-entropy of logits z (N, C) with class indices t (N,): forward and backward at once.

    Writes grad[n] = softmax(z[n]) - onehot(t[n]), the gradient of ell_n (S7), or zeros for a sample
    whose target is ``ignore_index``.  Returns (total, count, bad): the sum of ell_n = -log p[t[n]]
    over the counted samples (S3), how many were counted (D of (S8)), and the first sample whose
    target is out of range (-1 if none; the caller then raises before using anything).
    """
    N, C = z.shape
    total = z.dtype.type(0)
    count = 0
    for n in range(N):
        y = t[n]
        zr = z[n]
        gr = grad[n]
        if y == ignore_index:  # contributes nothing and is not counted
            for c in range(C):
                gr[c] = 0
            continue
        if y < 0 or y >= C:
            return total, count, n
        m = zr[0]  # m = max_c z_c, so that every exp(z_c - m) <= 1 (S1)
        for c in range(1, C):
            m = max(m, zr[c])
        s = z.dtype.type(0)
        for c in range(C):
            e = np.exp(zr[c] - m)
            gr[c] = e  # exp(z_c - m), divided by the sum below
            s += e
        for c in range(C):
            gr[c] = gr[c] / s  # p_c (S1)
        gr[y] -= 1  # p - onehot(y) (S7)
        total += np.log(s) - (zr[y] - m)  # -log p_y = log sum_k exp(z_k - m) - (z_y - m)  (S2), (S3)
        count += 1
    return total, count, -1


def cross_entropy_index(z, t, ignore_index, mean=False):
    """(total, count, bad, grad); with ``mean`` total / count.  Twin of reference.cross_entropy_index."""
    z = np.ascontiguousarray(z)
    t = np.ascontiguousarray(t, dtype=np.int64)
    grad = np.empty_like(z)
    total, count, bad = _cross_entropy_index(z, t, int(ignore_index), grad)
    dt = z.dtype.type
    if mean and bad < 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            return dt(dt(total) / dt(count)), count, bad, grad
    return dt(total), count, bad, grad


__all__ = ["bce_loss", "bce_loss_backward", "bce_with_logits_loss", "bce_with_logits_loss_backward", "cross_entropy",
           "cross_entropy_backward", "cross_entropy_index", "cross_entropy_probs", "cross_entropy_probs_backward",
           "huber_loss", "huber_loss_backward", "l1_loss", "l1_loss_backward", "loss_reduce", "loss_upstream",
           "mse_loss", "mse_loss_backward", "nll_loss", "nll_loss_backward", "smooth_l1_loss",
           "smooth_l1_loss_backward"]
