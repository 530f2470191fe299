"""BatchNorm, LayerNorm and Dropout on the GPU.

Derivations: derivations/14-batchnorm.md (BN1-BN11), derivations/15-layernorm-dropout.md (LD1-LD8); the fused
ReLU and shortcut: derivations/06-activations.md ((A1), (A2)), derivations/18-residual.md ((Q1), (Q2));
NumPy twins in ``reference_norm.py``.

BatchNorm: one block per channel for the statistics (forward) and for sum g, sum g x_hat (backward): thread t
adds the channel's elements t, t + THREADS, ... in that order (the sum of x - x[0, c, 0] and of its square:
one pass, shifted so that var = (ss - s^2/M)/M does not cancel), then ``tree_sum`` halves the partial sums
in shared memory; thread 0 writes the channel's mean and 1/sqrt(var + eps) and updates its running
statistics.  Then one thread per element normalises (or computes dL/dx).  The number of batches seen is
read by the statistics kernel (the cumulative average's factor 1 / count) and incremented by thread 0 of
the normalising kernel, launched after it, so nothing is copied back to the host and no block of the
statistics kernel can see the count already incremented.

The normalising kernel can also add a residual block's shortcut and apply ReLU as it writes y, and the
two backward kernels can apply ReLU's mask to dL/dy as they read it (``norm_relu.py``): BatchNorm + add +
ReLU in two launches forward and two backward, each the same float32 operations in the same order as
the separate kernels.

LayerNorm: one block per row (statistics, then y in the same block; likewise dL/dx); the parameter
gradients, sums over rows, one thread per column adding the rows in order.

Dropout: one thread per element; the keep/drop decision of its row is a counter-based hash of (key, row)
(LD8), the same numbers the CPU draws, whatever the launch shape.

No float atomics: every sum is taken in an order fixed by the shapes.  Legend: C channels, L positions per
channel, M = N*L; R rows, D row length; inner: elements per dropout decision.
"""
import math

import numpy as np
from numba import cuda, float32, uint64

from ..reference_norm import dropout_threshold
from .buffers import empty
from .elementwise import tree_sum
from .launch import THREADS, blocks, device_f32, empty_f32, flat, optional_f32, output, unused_i64

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


# --- BatchNorm (derivations/14-batchnorm.md) -------------------------------------------------------------

def _bn_stats(x, mean, invstd, rm, rv, count, channels, inner, training, update, momentum, cumulative, eps):
    """Block c: the batch's mean and biased variance of channel c (BN1), (BN2), and the running statistics
    updated (BN8), (BN9); or, not training, the running statistics themselves (BN10)."""
    buf = cuda.shared.array(THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    if training:  # the whole block takes the same branch: every thread reaches tree_sum's syncthreads
        M = (x.shape[0] // (channels * inner)) * inner
        shift = x[c * inner]
        s = float32(0.0)
        ss = float32(0.0)
        for e in range(t, M, THREADS):  # trips depend on the shapes only
            n = e // inner
            d = x[(n * channels + c) * inner + e - n * inner] - shift
            s += d
            ss += d * d
        buf[t] = s
        s = tree_sum(buf)  # every thread of the block calls it: it synchronises them
        buf[t] = ss
        ss = tree_sum(buf)
        if t == 0:
            mf = float32(M)
            m = s / mf
            var = (ss - s * m) / mf
            var = max(var, float32(0.0))
            mean[c] = shift + m
            invstd[c] = float32(1.0) / math.sqrt(var + eps)
            if update:
                f = momentum
                if cumulative:
                    f = float32(1.0) / float32(count[0] + 1)
                rm[c] = (float32(1.0) - f) * rm[c] + f * (shift + m)  # (BN8)
                rv[c] = (float32(1.0) - f) * rv[c] + f * (var * (mf / float32(M - 1)))  # (BN9)
    elif t == 0:  # (BN10): the running statistics are the constants
        mean[c] = rm[c]
        invstd[c] = float32(1.0) / math.sqrt(rv[c] + eps)


def _bn_normalise(x, y, mean, invstd, w, b, r, count, channels, inner, has_w, has_b, has_r, relu, bump):
    """One thread per element: y = (x - mean) * (gamma * invstd) + beta  (BN3), (BN4); then + r (a
    shortcut, (Q1)) when ``has_r`` and ReLU (A1) when ``relu``.  With ``bump``, thread 0 also counts the
    batch: num_batches_tracked += 1, after the statistics kernel (launched before) has read it."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        c = (i // inner) % channels
        a = invstd[c]
        if has_w:
            a *= w[c]
        v = (x[i] - mean[c]) * a
        if has_b:
            v += b[c]
        if has_r:
            v += r[i]
        if relu:
            v = float32(0.0) if v <= float32(0.0) else v  # noqa: FURB136  as relu_forward: a NaN passes
        y[i] = v
        if bump and i == 0:
            count[0] += 1


def _bn_backward_sums(gy, x, mean, invstd, dgamma, dbeta, y, channels, inner, masked):
    """Block c: dbeta = sum g (BN5), dgamma = sum g x_hat (BN6), in a fixed order.  With ``masked``, g is
    ReLU's backward of gy at the output y (A2): 0 where y <= 0."""
    buf = cuda.shared.array(THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    M = (x.shape[0] // (channels * inner)) * inner
    m = mean[c]
    sg = float32(0.0)
    sgx = float32(0.0)
    for e in range(t, M, THREADS):
        n = e // inner
        k = (n * channels + c) * inner + e - n * inner
        g = gy[k]
        if masked and y[k] <= float32(0.0):
            g = float32(0.0)
        sg += g
        sgx += g * (x[k] - m)
    buf[t] = sg
    sg = tree_sum(buf)
    buf[t] = sgx
    sgx = tree_sum(buf)
    if t == 0:
        dbeta[c] = sg
        dgamma[c] = sgx * invstd[c]


def _bn_backward_dx(gy, x, mean, invstd, w, dgamma, dbeta, gx, y, gz, channels, inner, has_w, training, masked,
                    keep_g):
    """One thread per element: dL/dx by (BN7) (batch statistics) or (BN11) (constant ones).  With
    ``masked``, g is ReLU's backward of gy at the output y (A2), and with ``keep_g`` it is written to gz
    too (a residual block's shortcut gradient, (Q2))."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        c = (i // inner) % channels
        inv = invstd[c]
        k = inv * w[c] if has_w else inv
        g = gy[i]
        if masked and y[i] <= float32(0.0):
            g = float32(0.0)
        if keep_g:
            gz[i] = g
        if training:
            mf = float32((x.shape[0] // (channels * inner)) * inner)
            a = dbeta[c] / mf
            bcoef = dgamma[c] * inv / mf
            gx[i] = k * (g - a - (x[i] - mean[c]) * bcoef)
        else:
            gx[i] = k * g


bn_stats_kernel = cuda.jit(_bn_stats)
bn_normalise_kernel = cuda.jit(_bn_normalise)
bn_backward_sums_kernel = cuda.jit(_bn_backward_sums)
bn_backward_dx_kernel = cuda.jit(_bn_backward_dx)


def _counter(num_batches_tracked):
    return unused_i64() if num_batches_tracked is None else num_batches_tracked.reshape(1)


def batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """(y, mean, invstd) of x (N, C, L): ``reference.batch_norm_forward``; running statistics updated in place."""
    return bn_forward(x, None, False, weight, bias, running_mean, running_var, num_batches_tracked, training,
                      momentum, eps, "cuda batch_norm_forward")


def bn_forward(x, residual, relu, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
               eps, who):
    """batch_norm_forward, with ``residual`` (x's shape, or None) added and ReLU applied when ``relu``, in the
    same two launches."""
    device_f32(x, who, "x", ndim=3)
    r = empty_f32() if residual is None else flat(device_f32(residual, who, "residual", shape=x.shape))
    C, L = x.shape[1], x.shape[2]
    w, b = optional_f32(weight, who, "weight", (C,)), optional_f32(bias, who, "bias", (C,))
    update = bool(training) and running_mean is not None
    rm = optional_f32(running_mean, who, "running_mean", (C,)) if update or not training else empty_f32()
    rv = optional_f32(running_var, who, "running_var", (C,)) if update or not training else empty_f32()
    count = _counter(num_batches_tracked if update else None)
    mean, invstd = empty(C, np.float32), empty(C, np.float32)
    y = empty(x.shape, np.float32)
    if x.size:
        bn_stats_kernel[C, THREADS](flat(x), mean, invstd, rm, rv, count, C, L, bool(training), update,
                                    np.float32(momentum or 0.0), momentum is None, np.float32(eps))
        bn_normalise_kernel[blocks(x.size), THREADS](flat(x), flat(y), mean, invstd, w, b, r, count, C, L,
                                                     weight is not None, bias is not None, residual is not None,
                                                     bool(relu), update and num_batches_tracked is not None)
    return y, mean, invstd


def batch_norm_backward(grad_y, x, weight, mean, invstd, training, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta): ``reference.batch_norm_backward``; ``out``: the arrays to write dL/dgamma
    and dL/dbeta into (None: new ones)."""
    return bn_backward(grad_y, None, False, x, weight, mean, invstd, training, "cuda batch_norm_backward", out)[:3]


def bn_backward(grad_y, y, keep_g, x, weight, mean, invstd, training, who, out=(None, None)):
    """batch_norm_backward of g = ReLU's backward of grad_y at the output ``y`` (or of grad_y itself when
    ``y`` is None), in the same two launches; returns (dL/dx, dL/dgamma, dL/dbeta, g if ``keep_g`` else None)."""
    device_f32(x, who, "x", ndim=3)
    device_f32(grad_y, who, "grad_y", shape=x.shape)
    masked = y is not None
    y_flat = flat(device_f32(y, who, "y", shape=x.shape)) if masked else empty_f32()
    C, L = x.shape[1], x.shape[2]
    w = optional_f32(weight, who, "weight", (C,))
    dgamma, dbeta = output(out[0], (C,), who, "out[0]"), output(out[1], (C,), who, "out[1]")
    gx = empty(x.shape, np.float32)
    gz = empty(x.shape, np.float32) if keep_g else None
    if x.size:
        bn_backward_sums_kernel[C, THREADS](flat(grad_y), flat(x), mean, invstd, dgamma, dbeta, y_flat, C, L, masked)
        bn_backward_dx_kernel[blocks(x.size), THREADS](flat(grad_y), flat(x), mean, invstd, w, dgamma, dbeta,
                                                       flat(gx), y_flat, empty_f32() if gz is None else flat(gz),
                                                       C, L, weight is not None, bool(training), masked,
                                                       bool(keep_g))
    return gx, dgamma, dbeta, gz


# --- LayerNorm (derivations/15-layernorm-dropout.md) -------------------------------------------------------

def _ln_forward(x, y, w, b, mean, invstd, D, has_w, has_b, eps):
    """Block r: row r's mean and biased variance (LD1), (LD2), then its y = gamma x_hat + beta (LD3)."""
    buf = cuda.shared.array(THREADS, float32)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    base = r * D
    shift = x[base]
    s = float32(0.0)
    ss = float32(0.0)
    for j in range(t, D, THREADS):
        d = x[base + j] - shift
        s += d
        ss += d * d
    buf[t] = s
    s = tree_sum(buf)
    buf[t] = ss
    ss = tree_sum(buf)
    df = float32(D)
    m = s / df
    var = (ss - s * m) / df
    var = max(var, float32(0.0))
    inv = float32(1.0) / math.sqrt(var + eps)
    mu = shift + m
    if t == 0:
        mean[r] = mu
        invstd[r] = inv
    for j in range(t, D, THREADS):
        v = (x[base + j] - mu) * inv
        if has_w:
            v *= w[j]
        if has_b:
            v += b[j]
        y[base + j] = v


def _ln_backward_dx(gy, x, w, mean, invstd, gx, D, has_w):
    """Block r: dL/dx of row r, (LD4): the sums of g_hat and g_hat x_hat, then every element."""
    buf = cuda.shared.array(THREADS, float32)
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    base = r * D
    mu = mean[r]
    inv = invstd[r]
    sg = float32(0.0)
    sgx = float32(0.0)
    for j in range(t, D, THREADS):
        g = gy[base + j]
        if has_w:
            g *= w[j]
        sg += g
        sgx += g * (x[base + j] - mu) * inv
    buf[t] = sg
    sg = tree_sum(buf)
    buf[t] = sgx
    sgx = tree_sum(buf)
    df = float32(D)
    for j in range(t, D, THREADS):
        g = gy[base + j]
        if has_w:
            g *= w[j]
        gx[base + j] = inv * (g - sg / df - (x[base + j] - mu) * inv * (sgx / df))


def _ln_backward_params(gy, x, mean, invstd, dgamma, dbeta, D):
    """One thread per column j: dgamma[j] = sum_r g x_hat, dbeta[j] = sum_r g, rows in order (LD5)."""
    j = cuda.grid(1)
    if j < D:
        R = x.shape[0] // D
        sg = float32(0.0)
        sgx = float32(0.0)
        for r in range(R):
            g = gy[r * D + j]
            sg += g
            sgx += g * (x[r * D + j] - mean[r]) * invstd[r]
        dbeta[j] = sg
        dgamma[j] = sgx


ln_forward_kernel = cuda.jit(_ln_forward)
ln_backward_dx_kernel = cuda.jit(_ln_backward_dx)
ln_backward_params_kernel = cuda.jit(_ln_backward_params)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, invstd) of x (R, D): ``reference.layer_norm_forward``."""
    who = "cuda layer_norm_forward"
    device_f32(x, who, "x", ndim=2)
    R, D = x.shape
    w, b = optional_f32(weight, who, "weight", (D,)), optional_f32(bias, who, "bias", (D,))
    y = empty(x.shape, np.float32)
    mean, invstd = empty(R, np.float32), empty(R, np.float32)
    if x.size:
        ln_forward_kernel[R, THREADS](flat(x), flat(y), w, b, mean, invstd, D, weight is not None, bias is not None,
                                      np.float32(eps))
    return y, mean, invstd


def layer_norm_backward(grad_y, x, weight, mean, invstd, out=(None, None)):
    """(dL/dx, dL/dgamma, dL/dbeta): ``reference.layer_norm_backward``; ``out``: the (D,) arrays to write dL/dgamma
    and dL/dbeta into (None: new ones)."""
    who = "cuda layer_norm_backward"
    device_f32(x, who, "x", ndim=2)
    device_f32(grad_y, who, "grad_y", shape=x.shape)
    R, D = x.shape
    w = optional_f32(weight, who, "weight", (D,))
    gx = empty(x.shape, np.float32)
    dgamma, dbeta = output(out[0], (D,), who, "out[0]"), output(out[1], (D,), who, "out[1]")
    if x.size:
        ln_backward_dx_kernel[R, THREADS](flat(grad_y), flat(x), w, mean, invstd, flat(gx), D, weight is not None)
        ln_backward_params_kernel[blocks(D), THREADS](flat(grad_y), flat(x), mean, invstd, dgamma, dbeta, D)
    return gx, dgamma, dbeta


# --- Dropout (derivations/15-layernorm-dropout.md) ---------------------------------------------------------

@cuda.jit(device=True, inline=True)
def dropout_bits(key, index):
    """``reference.dropout_bits``: splitmix64's finaliser of key + (index + 1) * golden, top 24 bits (LD8)."""
    z = key + (uint64(index) + uint64(1)) * uint64(_GOLDEN)
    z = (z ^ (z >> uint64(30))) * uint64(_MIX1)
    z = (z ^ (z >> uint64(27))) * uint64(_MIX2)
    z = z ^ (z >> uint64(31))
    return z >> uint64(40)


def _dropout_forward(x, y, mask, key, threshold, scale, inner):
    """One thread per element: kept (times 1 / (1 - p)) or 0, as its row's bits say (LD6), (LD8)."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        r = i // inner
        keep = dropout_bits(key, r) >= uint64(threshold)
        y[i] = x[i] * (scale if keep else float32(0.0))  # a product even when dropped: NaN * 0 is NaN, as torch
        if i - r * inner == 0:
            mask[r] = 1 if keep else 0


def _dropout_backward(gy, mask, scale, inner, gx):
    """One thread per element: dL/dx = mask * dL/dy / (1 - p)  (LD7)."""
    i = cuda.grid(1)
    if i < gy.shape[0]:
        gx[i] = gy[i] * (scale if mask[i // inner] != 0 else float32(0.0))


dropout_forward_kernel = cuda.jit(_dropout_forward)
dropout_backward_kernel = cuda.jit(_dropout_backward)


def _scale(p):
    return np.float32(0.0 if p >= 1 else 1.0 / (1.0 - p))


def dropout_forward(x, p, key, inner, inplace):
    """(y, mask (R,) uint8): ``reference.dropout_forward``; the same mask as the CPU's for the same key."""
    who = "cuda dropout_forward"
    device_f32(x, who, "x")
    R = x.size // inner if inner else 0
    mask = empty(R, np.uint8)
    y = x if inplace else empty(x.shape, np.float32)
    if x.size:
        dropout_forward_kernel[blocks(x.size), THREADS](flat(x), flat(y), mask, np.uint64(key),
                                                        np.int64(dropout_threshold(p)), _scale(p), inner)
    return y, mask


def dropout_backward(grad_y, mask, p, inner):
    """dL/dx = mask * dL/dy / (1 - p): ``reference.dropout_backward``."""
    device_f32(grad_y, "cuda dropout_backward", "grad_y")
    gx = empty(grad_y.shape, np.float32)
    if grad_y.size:
        dropout_backward_kernel[blocks(grad_y.size), THREADS](flat(grad_y), mask, _scale(p), inner, flat(gx))
    return gx
