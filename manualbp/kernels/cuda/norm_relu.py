"""BatchNorm followed by ReLU (and a residual block's shortcut added in between) on the GPU.

Derivations: derivations/14-batchnorm.md, derivations/06-activations.md ((A1), (A2)), derivations/18-residual.md
((Q1), (Q2), (Q7)); twins in ``reference_norm_relu.py``.

For now the three steps run as the GPU's own BatchNorm, add and ReLU launches (``norm.py``, ``residual.py``,
``elementwise.py``), one after the other: the same results as one fused pass, without its saving in memory
traffic (the CPU's ``cpu/norm_relu.py`` has that).
"""
from .elementwise import relu_backward, relu_forward
from .norm import batch_norm_backward, batch_norm_forward
from .residual import add

__all__ = ["batch_norm_relu_backward", "batch_norm_relu_forward"]


def batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var, num_batches_tracked, training,
                            momentum, eps):
    """(y, mean, invstd): ``reference.batch_norm_relu_forward``."""
    z, mean, invstd = batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training,
                                         momentum, eps)
    if residual is not None:
        z = add(z, residual)  # (Q1)
    return relu_forward(z), mean, invstd  # (A1)


def batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad):
    """(dL/dx, dL/dgamma, dL/dbeta, dL/dz or None): ``reference.batch_norm_relu_backward``."""
    g = relu_backward(grad_y, y)  # (A2), the mask read off the output
    gx, dgamma, dbeta = batch_norm_backward(g, x, weight, mean, invstd, training)
    return gx, dgamma, dbeta, (g if sum_grad else None)
