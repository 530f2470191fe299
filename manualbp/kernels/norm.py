"""The normalisation and dropout operations, dispatched like every operation of ``kernels/__init__.py``
(NumPy arrays to ``cpu/norm.py`` or ``reference_norm.py``, device arrays to ``cuda/norm.py``).

Derivations: derivations/14-batchnorm.md (BN*), derivations/15-layernorm-dropout.md (LD*).
BatchNorm takes its input as (N, C, L) (L = H*W, or 1 for (N, C) features), LayerNorm as (R, D) rows,
Dropout as any C-contiguous array whose elements come in rows of ``inner`` that share one decision.
"""
from . import _impl


def batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """(y, mean, invstd): y = gamma (x - mean) invstd + beta per channel, with the batch's statistics (BN1)-(BN4)
    when ``training`` (and the running ones updated in place, (BN8), (BN9)), else the running ones (BN10)."""
    return _impl("batch_norm_forward", x, weight, bias, running_mean, running_var, num_batches_tracked).\
        batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps)


def batch_norm_backward(grad_y, x, weight, mean, invstd, training, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta): (BN5)-(BN7) through the batch's statistics, or (BN11) with constant ones.
    ``out``: (where dL/dgamma goes, where dL/dbeta goes) on the GPU, as ``matmul``'s ``out``."""
    impl = _impl("batch_norm_backward", grad_y, x, weight, mean, invstd)
    if out[0] is None and out[1] is None:
        return impl.batch_norm_backward(grad_y, x, weight, mean, invstd, training)
    return impl.batch_norm_backward(grad_y, x, weight, mean, invstd, training, out=out)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, invstd): each row of x (R, D) normalised by its own statistics, then gamma, beta.  (LD1)-(LD3)"""
    return _impl("layer_norm_forward", x, weight, bias).layer_norm_forward(x, weight, bias, eps)


def layer_norm_backward(grad_y, x, weight, mean, invstd, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta) of ``layer_norm_forward``.  (LD4), (LD5)
    ``out``: (where dL/dgamma goes, where dL/dbeta goes), each of D elements, as batch_norm_backward's."""
    impl = _impl("layer_norm_backward", grad_y, x, weight, mean, invstd)
    if out[0] is None and out[1] is None:
        return impl.layer_norm_backward(grad_y, x, weight, mean, invstd)
    return impl.layer_norm_backward(grad_y, x, weight, mean, invstd, out=out)


def dropout_forward(x, p, key, inner, inplace):
    """(y, mask): each row of ``inner`` elements kept (scaled by 1 / (1 - p)) or zeroed, decided by a
    counter-based hash of (key, row)  (LD6), (LD8).  mask: uint8 (R,)."""
    return _impl("dropout_forward", x).dropout_forward(x, p, key, inner, inplace)


def dropout_backward(grad_y, mask, p, inner):
    """dL/dx = mask * dL/dy / (1 - p).  (LD7)"""
    return _impl("dropout_backward", grad_y, mask).dropout_backward(grad_y, mask, p, inner)


__all__ = ["batch_norm_backward", "batch_norm_forward", "dropout_backward", "dropout_forward",
           "layer_norm_backward", "layer_norm_forward"]
