"""Element-wise operations on the CPU: activations, softmax, the bias of a Linear layer, accumulation.

Derivations: derivations/06-activations.md ((A1)-(A11)), derivations/03-linear.md ((L1), (L4)),
derivations/04-conv2d.md ((K3)).

Each of these reads its input once and writes its output once, so NumPy's vectorized loops run most of
them near memory speed, and the CPU uses the NumPy twins of ``reference.py`` as they are.  ReLU is the
exception: ``np.where`` builds a boolean mask and runs on one thread, about 1.2 ms for a (32, 16, 32, 32)
activation, which made ReLU a third of a ResNet-20 step; one compiled pass on all threads (no arithmetic,
so the same bits as the twin, NaN included) takes a fraction of that.
"""
import numpy as np
from numba import njit, prange

from ..outputs import written
from ..reference import (
    add_,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax_backward,
    log_softmax_forward,
    scale,
    sigmoid_backward,
    sigmoid_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .gemm import matmul

# Below this many elements the thread pool is not woken.
RELU_PARALLEL_MIN = 1 << 15


@njit(cache=True, parallel=True)
def _relu_forward(x, y):
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = 0 if v <= 0 else v  # noqa: FURB136  (A1); a NaN fails v <= 0 and stays NaN (max(0, v) would give 0)


@njit(cache=True)
def _relu_forward_serial(x, y):
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = 0 if v <= 0 else v  # noqa: FURB136  (NaN stays NaN)


@njit(cache=True, parallel=True)
def _relu_backward(g, x, gx):
    for i in prange(x.shape[0]):
        gx[i] = 0 if x[i] <= 0 else g[i]  # (A2)


@njit(cache=True)
def _relu_backward_serial(g, x, gx):
    for i in range(x.shape[0]):
        gx[i] = 0 if x[i] <= 0 else g[i]


def relu_forward(x):
    """y = max(x, 0)  (A1), NaN kept.  Twin of reference.relu_forward (the same bits)."""
    x = x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (ascontiguousarray makes a 0-d array 1-d)
    y = np.empty_like(x)
    if x.size:
        kernel = _relu_forward if x.size >= RELU_PARALLEL_MIN else _relu_forward_serial
        kernel(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(grad_y, x):
    """dL/dx = dL/dy where x > 0 (or NaN), else 0  (A2).  Twin of reference.relu_backward."""
    x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    g = grad_y if grad_y.flags.c_contiguous and grad_y.dtype == x.dtype else np.ascontiguousarray(grad_y, x.dtype)
    gx = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernel = _relu_backward if x.size >= RELU_PARALLEL_MIN else _relu_backward_serial
        kernel(g.reshape(-1), x.reshape(-1), gx.reshape(-1))
    return gx


def linear_forward(x, w, b):
    """y = x W^T + b  (L1): ``matmul`` then the bias added to every row in place."""
    y = matmul(x, w, transpose_b=True)
    if b is not None:
        y += b
    return y


def bias_grad(grad_y, out=None):
    """dL/db, the sum of grad_y over every axis but 1  (L4), (K3).  (A convolution's bias gradient comes
    with its weight gradient from ``conv2d_grad_params``, through a compiled per-channel sum.)  ``out`` as
    ``reference.bias_grad``'s."""
    return written(out, grad_y.sum(axis=(0,) + tuple(range(2, grad_y.ndim))))


__all__ = ["add_", "bias_grad", "leaky_relu_backward", "leaky_relu_forward", "linear_forward", "log_softmax_backward",
           "log_softmax_forward", "relu_backward",
           "relu_forward", "scale", "sigmoid_backward", "sigmoid_forward", "softmax_backward", "softmax_forward",
           "tanh_backward", "tanh_forward"]
