"""Element-wise operations on the CPU: activations, softmax, the bias of a Linear layer, accumulation.

Derivations: derivations/06-activations.md ((A1)-(A11)), derivations/03-linear.md ((L1), (L4)),
derivations/04-conv2d.md ((K3)).

Each of these reads its input once and writes its output once, so NumPy's vectorized loops already run
them at memory speed; a Numba kernel would only pay off by fusing several into one pass, which is left to
the training step's fused kernels.  So the CPU uses the NumPy twins of ``reference.py`` as they are.
"""
from ..reference import (
    add_,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax_backward,
    log_softmax_forward,
    relu_backward,
    relu_forward,
    scale,
    sigmoid_backward,
    sigmoid_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .gemm import matmul


def linear_forward(x, w, b):
    """y = x W^T + b  (L1): ``matmul`` then the bias added to every row in place."""
    y = matmul(x, w, transpose_b=True)
    if b is not None:
        y += b
    return y


def bias_grad(grad_y):
    """dL/db, the sum of grad_y over every axis but 1  (L4), (K3).  (A convolution's bias gradient comes
    with its weight gradient from ``conv2d_grad_params``, through a compiled per-channel sum.)"""
    return grad_y.sum(axis=(0,) + tuple(range(2, grad_y.ndim)))


__all__ = ["add_", "bias_grad", "leaky_relu_backward", "leaky_relu_forward", "linear_forward", "log_softmax_backward",
           "log_softmax_forward", "relu_backward",
           "relu_forward", "scale", "sigmoid_backward", "sigmoid_forward", "softmax_backward", "softmax_forward",
           "tanh_backward", "tanh_forward"]
