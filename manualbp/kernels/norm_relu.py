"""BatchNorm followed by ReLU (with a residual block's shortcut added before the ReLU) as one operation,
dispatched like every operation of ``kernels/__init__.py``: NumPy arrays to ``cpu/norm_relu.py`` (or
``reference_norm_relu.py``), device arrays to ``cuda/norm_relu.py``.

Derivations: derivations/14-batchnorm.md (BN*), derivations/06-activations.md ((A1), (A2)),
derivations/18-residual.md ((Q1), (Q2), (Q7)).
"""
from . import _impl

__all__ = ["batch_norm_relu_backward", "batch_norm_relu_forward"]


def batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var, num_batches_tracked, training,
                            momentum, eps):
    """(y, mean, invstd): y = relu(batch_norm(x) + residual), residual None for none; the statistics and the running
    ones as ``batch_norm_forward``.  (BN1)-(BN4), (BN8)-(BN10), (Q1), (A1)"""
    return _impl("batch_norm_relu_forward", x, residual, weight, bias, running_mean, running_var,
                 num_batches_tracked).batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var,
                                                              num_batches_tracked, training, momentum, eps)


def batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta, dL/dz or None), z = batch_norm(x) + residual: ReLU's mask read off the output y
    (A2), then (BN5)-(BN7) or (BN11); dL/dz, the shortcut's gradient (Q2), when ``sum_grad``.  ``out`` as
    ``batch_norm_backward``'s."""
    impl = _impl("batch_norm_relu_backward", grad_y, y, x, weight, mean, invstd)
    if out[0] is None and out[1] is None:
        return impl.batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad)
    return impl.batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad, out=out)
