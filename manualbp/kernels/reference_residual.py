"""NumPy twins of the residual block's operations (``kernels/residual.py``).

Derivation: derivations/18-residual.md.
"""
import numpy as np

__all__ = ["add", "shortcut_a_backward", "shortcut_a_forward"]


def add(a, b):
    """y = a + b  (Q1).  Its backward hands the same gradient to both: dL/da = dL/db = dL/dy  (Q2)."""
    return a + b


def shortcut_a_forward(x, pad):
    """(N, C, H, W) -> (N, C + 2*pad, ceil(H/2), ceil(W/2)): every second pixel, zero channels around  (Q3)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c + 2 * pad, (h + 1) // 2, (w + 1) // 2), dtype=x.dtype)
    y[:, pad:pad + c] = x[:, :, ::2, ::2]
    return y


def shortcut_a_backward(grad_y, x_shape, pad):
    """The gradient of the kept pixels comes back from their channel; skipped pixels and padding give 0  (Q4)."""
    c = int(x_shape[1])
    gx = np.zeros(tuple(int(s) for s in x_shape), dtype=grad_y.dtype)
    gx[:, :, ::2, ::2] = grad_y[:, pad:pad + c]
    return gx
