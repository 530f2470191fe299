"""The optimizer's update on the CPU: one compiled loop over a parameter's elements.

Derivation: derivations/09-sgd-momentum.md (O3)-(O6); readable twin: ``reference.sgd_update``
(``tests/test_kernels.py`` holds them equal, bit for bit).  A LeNet-5 step updates 62,000 parameters in
ten arrays: as NumPy expressions each array would cost a handful of temporaries and calls; one loop does
it in place.  It runs on the calling thread only.

Legend: a parameter and its gradient and momentum buffer are flat (P,) vectors.
"""
import numpy as np
from numba import njit


# No fast-math: each line should round exactly as the NumPy expression of its twin.
@njit(cache=True)
def _sgd_update(p, g, buf, lr, mu, one_minus_tau, wd, nesterov, momentum, first):
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


_NO_BUFFER = {}  # a 0-length stand-in for the buffer when there is no momentum, one per dtype


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One SGD step, in place.  Twin of reference.sgd_update; see its docstring.

    p (and buf) must be C-contiguous: they are updated through flat views.  Every array is passed
    flat and every scalar in p's dtype, so the kernel compiles once per dtype whatever the shapes.
    """
    t = p.dtype.type
    flat = p.reshape(-1)  # a view: writing it writes p
    gf = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
    if buf is None:
        bf = _NO_BUFFER.get(p.dtype.str)
        if bf is None:
            bf = _NO_BUFFER[p.dtype.str] = np.empty(0, dtype=p.dtype)
    else:
        bf = buf.reshape(-1)
    _sgd_update(flat, gf, bf, t(lr), t(momentum), t(1 - dampening), t(weight_decay),
                         bool(nesterov), buf is not None, bool(first))
