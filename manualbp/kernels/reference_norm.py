"""BatchNorm, LayerNorm and Dropout in plain NumPy: the readable twins of ``kernels/cpu/norm.py`` and
``kernels/cuda/norm.py`` (the same names and positional arguments; ``tests/test_norm_kernels.py`` holds them
equal).

Derivations: derivations/14-batchnorm.md (BN1-BN9), derivations/15-layernorm-dropout.md (LD1-LD8).

Legend: N batch, C channels, L positions per channel (H*W for images, 1 for (N, C) features); M = N*L
values per channel; R rows and D the normalised size for LayerNorm; R rows of ``inner`` elements that share
one Dropout decision (one element for Dropout, one (n, c) plane for Dropout2d).
"""
import numpy as np

from .outputs import written

# --- BatchNorm (derivations/14-batchnorm.md) ------------------------------------------------------------


def batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """(y, mean, invstd) of batch normalisation; in training, the running statistics are updated in place.

    Inputs:
    - x: (N, C, L)
    - weight, bias: (C,) gamma and beta, or None (affine=False)
    - running_mean, running_var: (C,) or None (track_running_stats=False); num_batches_tracked: 0-d int64 or None
    - training: True normalises with the batch's statistics (BN1), (BN2) -- and, with running statistics,
      updates them (BN8), (BN9); False normalises with the running statistics (BN10)
    - momentum: the running average's factor, or None for the cumulative average (factor 1 / batches seen)
    - eps: added to the variance

    Returns y (N, C, L) = gamma * (x - mean) * invstd + beta  (BN3), (BN4), and the (C,) mean and
    invstd = 1 / sqrt(var + eps) it used (what backward needs).
    """
    if training:
        mean = x.mean(axis=(0, 2))  # (BN1)
        var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))  # (BN2): biased, divided by M
        if running_mean is not None:
            update_running_stats(running_mean, running_var, num_batches_tracked, mean, var,
                                 x.shape[0] * x.shape[2], momentum)
    else:
        mean, var = running_mean, running_var  # (BN10): constants
    invstd = 1 / np.sqrt(var + eps)
    y = (x - mean[None, :, None]) * invstd[None, :, None]  # x_hat  (BN3)
    if weight is not None:
        y = y * weight[None, :, None]
    if bias is not None:
        y = y + bias[None, :, None]  # (BN4)
    return np.ascontiguousarray(y, dtype=x.dtype), mean.astype(x.dtype), invstd.astype(x.dtype)


def update_running_stats(running_mean, running_var, num_batches_tracked, mean, var, M, momentum):
    """In place: one more batch counted; running = (1 - f) running + f batch, with f = momentum (or
    1 / batches counted when momentum is None), and the batch variance made unbiased: var * M / (M - 1)
    (BN8), (BN9).  Shared by the CPU kernels (C numbers: nothing to compile)."""
    if num_batches_tracked is not None:
        num_batches_tracked += 1
    if momentum is None:
        f = 1.0 / int(num_batches_tracked) if num_batches_tracked is not None else 0.0
    else:
        f = momentum
    running_mean[...] = (1 - f) * running_mean + f * mean  # (BN8)
    running_var[...] = (1 - f) * running_var + f * (var * (M / (M - 1)))  # (BN9): Bessel's correction


def batch_norm_backward(grad_y, x, weight, mean, invstd, training, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta) of ``batch_norm_forward``.

    Inputs: grad_y and x (N, C, L); weight (C,) or None; the (C,) mean and invstd forward used; training: whether
    they were the batch's statistics (then they depend on x: the full gradient (BN7)) or constants (BN11).

    dL/dbeta = sum g  (BN5);  dL/dgamma = sum g * x_hat  (BN6);
    dL/dx = (invstd / M) * (M g_hat - sum g_hat - x_hat * sum(g_hat * x_hat)),  g_hat = gamma * g  (BN7),
    or, with constant statistics, dL/dx = gamma * invstd * g  (BN11).
    ``out``: where dL/dgamma and dL/dbeta go, if anywhere (``outputs.written``).
    """
    M = x.shape[0] * x.shape[2]
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    dbeta = grad_y.sum(axis=(0, 2))  # (BN5)
    dgamma = (grad_y * xhat).sum(axis=(0, 2))  # (BN6)
    gamma = np.ones_like(mean) if weight is None else weight
    ghat = grad_y * gamma[None, :, None]
    if training:
        dx = (invstd[None, :, None] / M) * (M * ghat - ghat.sum(axis=(0, 2), keepdims=True)
                                            - xhat * (ghat * xhat).sum(axis=(0, 2), keepdims=True))  # (BN7)
    else:
        dx = ghat * invstd[None, :, None]  # (BN11)
    return (np.ascontiguousarray(dx, dtype=x.dtype), written(out[0], dgamma.astype(x.dtype)),
            written(out[1], dbeta.astype(x.dtype)))


# --- LayerNorm (derivations/15-layernorm-dropout.md) --------------------------------------------------------


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, invstd): each row of x (R, D) normalised by its own mean and biased variance (LD1), (LD2),
    then y = gamma * x_hat + beta per column (LD3); weight, bias (D,) or None.  mean, invstd: (R,)."""
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    invstd = 1 / np.sqrt(var + eps)
    y = (x - mean[:, None]) * invstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return np.ascontiguousarray(y, dtype=x.dtype), mean.astype(x.dtype), invstd.astype(x.dtype)


def layer_norm_backward(grad_y, x, weight, mean, invstd, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta): BatchNorm's gradient (BN7) along each row instead of each channel (LD4),
    and the parameter gradients summed over the rows (LD5).  ``out``: arrays of D elements to copy dL/dgamma and
    dL/dbeta into (``outputs.written``), as batch_norm_backward's."""
    D = x.shape[1]
    xhat = (x - mean[:, None]) * invstd[:, None]
    dbeta = grad_y.sum(axis=0)
    dgamma = (grad_y * xhat).sum(axis=0)  # (LD5)
    ghat = grad_y if weight is None else grad_y * weight
    dx = (invstd[:, None] / D) * (D * ghat - ghat.sum(axis=1, keepdims=True)
                                  - xhat * (ghat * xhat).sum(axis=1, keepdims=True))  # (LD4)
    return (np.ascontiguousarray(dx, dtype=x.dtype), written(out[0], dgamma.astype(x.dtype)),
            written(out[1], dbeta.astype(x.dtype)))


# --- Dropout (derivations/15-layernorm-dropout.md) ----------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def dropout_bits(key, index):
    """24 random bits (an integer in [0, 2**24)) for each (key, index): splitmix64's finaliser applied to
    key + (index + 1) * golden, top 24 bits (LD8).  Counter-based: the bits depend on the key and the index
    only, never on the order or the thread that computes them, so every device draws the same mask."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.int64)


def dropout_threshold(p):
    """The smallest 24-bit number that keeps: u = bits / 2**24 >= p  <=>  bits >= ceil(p * 2**24)  (LD8)."""
    return int(np.ceil(p * 2.0 ** 24))


def dropout_scale(p, dtype):
    """1 / (1 - p), the inverted-dropout scale (LD6); 0 for p = 1, where nothing is kept."""
    return np.dtype(dtype).type(0 if p >= 1 else 1 / (1 - p))


def dropout_forward(x, p, key, inner, inplace):
    """(y, mask): row r of x viewed as (R, inner) is kept when its uniform number bits / 2**24 (LD8) is at least
    p, and then scaled by 1 / (1 - p); dropped rows are 0 (LD6).  mask: (R,) uint8, 1 where kept.  p = 1 drops
    all.  ``inplace`` writes y into x and returns x."""
    R = x.size // inner if inner else 0
    mask = (dropout_bits(key, np.arange(R)) >= dropout_threshold(p)).astype(np.uint8)
    factor = (mask.astype(x.dtype) * dropout_scale(p, x.dtype)).repeat(inner).reshape(x.shape)
    if inplace:
        x *= factor
        return x, mask
    return np.ascontiguousarray(x * factor), mask


def dropout_backward(grad_y, mask, p, inner):
    """dL/dx = mask * dL/dy / (1 - p), the mask of forward broadcast over each row's ``inner`` elements (LD7)."""
    factor = (mask.astype(grad_y.dtype) * dropout_scale(p, grad_y.dtype)).repeat(inner).reshape(grad_y.shape)
    return np.ascontiguousarray(grad_y * factor)


__all__ = ["batch_norm_backward", "batch_norm_forward", "dropout_backward", "dropout_bits", "dropout_forward",
           "dropout_scale", "dropout_threshold",
           "layer_norm_backward", "layer_norm_forward", "update_running_stats"]
