"""The operations of a residual block's two extra steps: the join ``y = a + b``, where the shortcut meets the
block's output, and He et al.'s option-A shortcut (keep every second pixel, pad the new channels with zeros),
dispatched like every operation of ``kernels/__init__.py``.

Derivation: derivations/18-residual.md ((Q1)-(Q4)).
"""
from . import _impl

__all__ = ["add", "shortcut_a_backward", "shortcut_a_forward"]


def add(a, b):
    """y = a + b, a new array (the join of a residual block: F(x) + shortcut(x)).  (Q1)"""
    return _impl("add", a, b).add(a, b)


def shortcut_a_forward(x, pad):
    """Option-A shortcut: y[n, pad + c, i, j] = x[n, c, 2i, 2j]; the pad channels on each side are 0.  (Q3)"""
    return _impl("shortcut_a_forward", x).shortcut_a_forward(x, pad)


def shortcut_a_backward(grad_y, x_shape, pad):
    """dL/dx[n, c, 2i, 2j] = dL/dy[n, pad + c, i, j]; 0 at the pixels the subsampling skipped.  (Q4)"""
    return _impl("shortcut_a_backward", grad_y).shortcut_a_backward(grad_y, x_shape, pad)
