"""BatchNorm followed by ReLU (and a residual block's shortcut added in between) on the GPU.

Derivations: derivations/14-batchnorm.md, derivations/06-activations.md ((A1), (A2)), derivations/18-residual.md
((Q1), (Q2), (Q7)); twins in ``reference_norm_relu.py``.

Forward: BatchNorm's two launches (``norm.py``), the normalising one adding the shortcut and applying ReLU as
it writes y.  Backward: BatchNorm's two launches, each applying ReLU's mask (read off y) to dL/dy as it
reads it, the second also writing the masked gradient out when a shortcut needs it.  The float32
operations and their order are those of BatchNorm, add and ReLU run one after the other, so the results
are the same to the bit, in two launches instead of four (three backward) and without the intermediate
arrays.
"""
from .norm import bn_backward, bn_forward

__all__ = ["batch_norm_relu_backward", "batch_norm_relu_forward"]


def batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var, num_batches_tracked, training,
                            momentum, eps):
    """(y, mean, invstd): ``reference.batch_norm_relu_forward``, y = relu(bn(x) + residual)  (Q1), (A1)."""
    return bn_forward(x, residual, True, weight, bias, running_mean, running_var, num_batches_tracked, training,
                      momentum, eps, "cuda batch_norm_relu_forward")


def batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta, dL/dz or None): ``reference.batch_norm_relu_backward``; dL/dz is ReLU's
    backward (A2), the mask read off the output, and is returned when ``sum_grad`` (the shortcut's share, (Q2))."""
    return bn_backward(grad_y, y, bool(sum_grad), x, weight, mean, invstd, training, "cuda batch_norm_relu_backward",
                       out)
