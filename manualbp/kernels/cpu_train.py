"""The two small kernels of every training step: the fused softmax-cross-entropy, and the SGD update.

Derivations: derivations/02-softmax-cross-entropy.md (S1), (S2), (S3), (S7), (S8);
derivations/09-sgd-momentum.md (O3)-(O6).  Twins: ``reference.cross_entropy_index`` and
``reference.sgd_update`` (``tests/test_kernels.py`` holds each pair equal).

Neither does much arithmetic (a LeNet-5 step has 10 logits per image and 62,000 parameters), but
written as a dozen NumPy expressions each, they cost more than a convolution at batch 1: every
NumPy call allocates its result and pays a few microseconds of Python.  One compiled loop per call
does the same arithmetic without the temporaries.

Both run on the calling thread only (the work is small), so nothing depends on the thread count.

Legend: N batch, C classes; a parameter and its gradient and momentum buffer are flat (P,) vectors.
"""
import numpy as np
from numba import njit


# No fast-math in either kernel: the loss must see NaN and infinity (a NaN logit gives a NaN loss, as in
# torch, and Network.fit stops on it), and each line should round as the NumPy expression of its twin.
@njit(cache=True)
def cross_entropy_index(z, t, ignore_index, grad):
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


@njit(cache=True)
def sgd_update(p, g, buf, lr, mu, one_minus_tau, wd, nesterov, momentum, first):
    """One SGD step on a flat parameter p (P,), in place, with torch's order of operations (O3)-(O6).

    g is dL/dp; buf the momentum buffer (written at the first step, updated after; unused when
    ``momentum`` is False).  The scalars have p's dtype, so a float32 step stays float32.  Each line
    rounds exactly as the NumPy expression of its twin does, so the two agree bit for bit.
    """
    for i in range(p.shape[0]):
        d = g[i]
        if wd != 0:
            d = d + wd * p[i]  # (O3)
        if momentum:
            if first:
                b = d  # the first buffer is the gradient itself, undamped (O4)
            else:
                b = buf[i] * mu + one_minus_tau * d  # (O4)
            buf[i] = b
            if nesterov:
                d = d + mu * b  # (O5)
            else:
                d = b  # (O5)
        p[i] = p[i] - lr * d  # (O6)
