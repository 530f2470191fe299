"""BatchNorm followed by ReLU, with a residual block's shortcut added in between where there is one, in plain
NumPy: the readable twins of ``kernels/cpu/norm_relu.py`` and ``kernels/cuda/norm_relu.py`` (the same names and
positional arguments; ``tests/test_norm_relu.py`` holds them equal).

Derivations: derivations/14-batchnorm.md ((BN1)-(BN11)), derivations/06-activations.md ((A1), (A2)),
derivations/18-residual.md ((Q1), (Q2), (Q7)).

    z = BN(x) + r        (r: the shortcut's output, or nothing)
    y = relu(z)

is three layers' arithmetic, unchanged: the point of doing it as one operation is the memory traffic (see
derivations/18-residual.md, "One pass instead of three").  The backward needs ReLU's mask, z > 0, and reads it
off the output instead of keeping z: y > 0 exactly where z > 0, and y is NaN exactly where z is (where the
gradient passes, as ReLU's own backward lets it).

Legend: N batch, C channels, L positions per channel (H*W for images).
"""
import numpy as np

from .reference_norm import batch_norm_backward, batch_norm_forward

__all__ = ["batch_norm_relu_backward", "batch_norm_relu_forward"]


def batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var, num_batches_tracked, training,
                            momentum, eps):
    """(y, mean, invstd): y = relu(batch_norm(x) + residual) (residual None: nothing added); mean and invstd, and
    the running statistics updated in place, exactly as ``batch_norm_forward``.  x, residual and y: (N, C, L)."""
    z, mean, invstd = batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training,
                                         momentum, eps)  # (BN1)-(BN4), (BN8)-(BN10)
    if residual is not None:
        z = z + residual  # (Q1)
    return np.where(z <= 0, z.dtype.type(0), z), mean, invstd  # (A1); NaN stays NaN


def batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta, dL/dz or None) of ``batch_norm_relu_forward``, from its output y.

    dL/dz = dL/dy where y > 0 (or NaN), else 0 (A2); then BatchNorm's backward of dL/dz (BN5)-(BN7), (BN11).
    dL/dz is also the shortcut's gradient (Q2): returned when ``sum_grad``, else None."""
    g = np.where(y <= 0, grad_y.dtype.type(0), grad_y)  # (A2)
    gx, dgamma, dbeta = batch_norm_backward(g, x, weight, mean, invstd, training, out)
    return gx, dgamma, dbeta, (g if sum_grad else None)
