"""BatchNorm followed by ReLU (and a residual block's shortcut added in between) on the CPU, in one pass each way.

Derivations: derivations/14-batchnorm.md ((BN1)-(BN11)), derivations/06-activations.md ((A1), (A2)),
derivations/18-residual.md ((Q1), (Q2), (Q7)); readable twins in ``reference_norm_relu.py``
(``tests/test_norm_relu.py`` holds them equal, and equal bit for bit to BatchNorm, add and ReLU run one
after the other).

Done as three operations, a residual block's second half reads and writes its (N, C, H, W) activations
eight times on the way forward (BatchNorm: the statistics, then x -> y; the add: y, r -> z; ReLU: z -> out).
Here the forward reads x twice (the statistics, then x and r -> out), per channel, with BatchNorm's arithmetic
in BatchNorm's order (``norm.py``), so the results are those of the three operations and do not depend on the
thread count.  The backward is ReLU's and then BatchNorm's kernels, the mask read off the output (see
``batch_norm_relu_backward``).

Legend: N batch, C channels, L positions per channel.
"""
import numpy as np
from numba import njit, prange

from ..reference_norm import update_running_stats
from .elementwise import relu_backward
from .norm import _FM, NORM_PARALLEL_MIN_ELEMENTS, _affine, _bn_channel_statistics, batch_norm_backward


@njit(cache=True, fastmath=_FM)
def _channel_forward(x, r, y, c, w, b, mean, var, invstd, training, eps, has_r):
    """Channel c: the statistics (BN1), (BN2) (or the running ones, (BN10)), then
    y = relu((x - mean) * (gamma * invstd) + beta [+ r])  (BN3), (BN4), (Q1), (A1)."""
    _bn_channel_statistics(x, c, mean, var, invstd, training, eps)  # norm.py's, so the same bits
    a = w[c] * invstd[c]
    mu = mean[c]
    beta = b[c]
    zero = x.dtype.type(0)
    for n in range(x.shape[0]):
        row = x[n, c]
        out = y[n, c]
        if has_r:
            res = r[n, c]
            for k in range(x.shape[2]):
                z = (row[k] - mu) * a + beta
                z = z + res[k]
                out[k] = zero if z <= 0 else z  # a NaN fails z <= 0 and stays NaN
        else:
            for k in range(x.shape[2]):
                z = (row[k] - mu) * a + beta
                out[k] = zero if z <= 0 else z


@njit(cache=True, fastmath=_FM, parallel=True)
def _forward(x, r, y, w, b, mean, var, invstd, training, eps, has_r):
    for c in prange(x.shape[1]):
        _channel_forward(x, r, y, c, w, b, mean, var, invstd, training, eps, has_r)


@njit(cache=True, fastmath=_FM)
def _forward_serial(x, r, y, w, b, mean, var, invstd, training, eps, has_r):
    for c in range(x.shape[1]):
        _channel_forward(x, r, y, c, w, b, mean, var, invstd, training, eps, has_r)


def batch_norm_relu_forward(x, residual, weight, bias, running_mean, running_var, num_batches_tracked, training,
                            momentum, eps):
    """``reference.batch_norm_relu_forward``, one task per channel: (y, mean, invstd); running statistics updated
    in place when training (BN8), (BN9)."""
    x = np.ascontiguousarray(x)
    C, dt = x.shape[1], x.dtype
    has_r = residual is not None
    r = np.ascontiguousarray(residual, dtype=dt) if has_r else x  # (not read without a residual)
    y = np.empty_like(x)
    if training:
        mean, var = np.empty(C, dt), np.empty(C, dt)
    else:
        mean, var = np.array(running_mean, dtype=dt), np.array(running_var, dtype=dt)  # (BN10)
    invstd = np.empty(C, dt)
    kernel = _forward if x.size >= NORM_PARALLEL_MIN_ELEMENTS and C > 1 else _forward_serial
    kernel(x, r, y, _affine(weight, C, dt, 1), _affine(bias, C, dt, 0), mean, var, invstd, bool(training),
           dt.type(eps), has_r)
    if training and running_mean is not None:
        update_running_stats(running_mean, running_var, num_batches_tracked, mean, var,
                             x.shape[0] * x.shape[2], momentum)
    return y, mean, invstd


def batch_norm_relu_backward(grad_y, y, x, weight, mean, invstd, training, sum_grad, out=(None, None)):
    """``reference.batch_norm_relu_backward``: (dL/dx, dL/dgamma, dL/dbeta, dL/dz or None).

    ReLU's backward with the mask read off y (``elementwise.relu_backward``: one vectorized pass, no branch), then
    BatchNorm's (``norm.batch_norm_backward``).  Folding the mask into BatchNorm's two passes was tried: its sums
    are scalar chains (the order is fixed), and a select per value there made the backward slower (1.16 ms
    against 0.86 for a (64, 16, 1024) float32 batch on one thread), so the mask keeps its own vectorized pass."""
    g = relu_backward(grad_y, y)  # (A2): 0 where y <= 0, else dL/dy (NaN passes)
    gx, dgamma, dbeta = batch_norm_backward(g, x, weight, mean, invstd, training, out)  # (BN5)-(BN7), (BN11)
    return gx, dgamma, dbeta, (g if sum_grad else None)
