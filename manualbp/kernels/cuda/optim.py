"""The optimizer's update on the GPU: one thread per element of a parameter.

Derivation: derivations/09-sgd-momentum.md (O3)-(O6).
"""
import numpy as np
from numba import cuda, float32

from .buffers import empty
from .launch import THREADS, blocks, device_f32, flat


def _sgd_update(p, g, buf, lr, mu, one_minus_tau, wd, nesterov, first_step):
    """One torch.optim.SGD step for one element (O3)-(O6); ``buf`` is not touched when mu == 0.
    Twin: ``reference.sgd_update``."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if wd != float32(0.0):
            d += wd * p[i]  # (O3)
        if mu != float32(0.0):
            if first_step:
                b = d  # the first buffer is the gradient itself, undamped (O4)
            else:
                b = mu * buf[i] + one_minus_tau * d  # (O4)
            buf[i] = b
            if nesterov:
                d = d + mu * b  # (O5)
            else:
                d = b
        p[i] -= lr * d  # (O6)


sgd_update_kernel = cuda.jit(_sgd_update)


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """theta <- theta - lr * d in place, with torch.optim.SGD's momentum, dampening, Nesterov, weight decay.

    NumPy twin: ``manualbp.kernels.reference.sgd_update`` (the same arguments, in the same order).
    p, g: float32 device arrays of one shape; ``buf`` (p's shape) is updated in place, and may be
    None when momentum == 0.  Pass ``first=True`` on the parameter's first update: the buffer then
    becomes the gradient, whatever it held (torch's undamped first buffer).  Returns ``p``.
    """
    who = "cuda sgd_update"
    device_f32(p, who, "p")
    device_f32(g, who, "g", shape=p.shape)
    if momentum != 0:
        device_f32(buf, who, "buf", shape=p.shape)
    else:
        buf = p  # never read or written when momentum == 0
    if p.size:
        sgd_update_kernel[blocks(p.size), THREADS](
            flat(p), flat(g), flat(buf), np.float32(lr), np.float32(momentum), np.float32(1.0 - dampening),
            np.float32(weight_decay), bool(nesterov), bool(first))
    return p


def empty_like(a):
    """An uninitialised float32 device array of a's shape (an optimizer's momentum buffer, say)."""
    return empty(tuple(a.shape), dtype=np.float32)
