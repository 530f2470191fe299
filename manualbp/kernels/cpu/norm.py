"""BatchNorm, LayerNorm and Dropout on the CPU, compiled by Numba.

Derivations: derivations/14-batchnorm.md (BN1-BN11), derivations/15-layernorm-dropout.md (LD1-LD8);
readable twins in ``reference_norm.py`` (``tests/test_norm_kernels.py`` holds them equal).

BatchNorm: one task per channel (``prange`` over C); for (N, C) features, one task per block of 64 channels
that walks the rows (a channel's values are then C apart in memory, a row's block is contiguous).  A channel's M = N*L values are read twice in the
forward: one pass for the statistics (the sum and the sum of squares of x - x[0, c, 0], a shift that keeps
the subtraction in var = (ss - s^2/M)/M from cancelling), one pass for y = (x - mean) * (gamma * invstd) + beta.
The backward likewise: one pass for sum g and sum g * x_hat, one for dL/dx.  Each channel's sums run in
a fixed order (n, then l) on one thread, so results are the same whatever the thread count.

LayerNorm: one task per row for the statistics, y and dL/dx; the parameter gradients (sums over rows) are
one task per block of columns, each adding the rows in order.

Dropout: one pass; each row's keep/drop decision is the counter-based hash of ``reference.dropout_uniform``
(LD8) of (key, row), so it does not depend on how the rows are shared among threads.

Every kernel has a serial twin (the same tasks, in order) for small inputs, where waking the thread pool costs
more than the work.  Of the fast-math flags only 'nsz' and 'contract' are on: a NaN in the input must reach the
output, a sum must run in the order written, and 1/sqrt must be the same in vector and scalar code.

Legend: N batch, C channels, L positions per channel, M = N*L; R rows, D row length; inner: elements per
dropout decision.
"""
import numpy as np
from numba import njit, prange

from ..outputs import written
from ..reference_norm import dropout_scale, dropout_threshold, update_running_stats

NORM_PARALLEL_MIN_ELEMENTS = 1 << 15
# Only 'nsz' and 'contract' (fused multiply-adds): without 'reassoc' LLVM may not reorder a sum (vectorising it
# splits it into lanes, and the split depends on the data's alignment and on the code around the loop), and
# without 'arcp'/'afn' 1/sqrt is not replaced by an approximation that vector and scalar code round
# differently; so every result is the same whatever the driver (serial or parallel) or the address of the
# array.  No 'nnan'/'ninf': a NaN must reach the output.
_FM = {"nsz", "contract"}


# --- BatchNorm (derivations/14-batchnorm.md) -------------------------------------------------------------

@njit(cache=True, fastmath=_FM)
def _bn_channel_stats(x, c):
    """(mean, biased var) of channel c of x (N, C, L): (BN1), (BN2), shifted by the channel's first value.

    Four partial sums of each kind (positions k = 0, 1, 2, 3 mod 4 of every row), added together at the end
    in a fixed order: independent chains the CPU overlaps, and the same order on every run."""
    N, _, L = x.shape
    shift = x[0, c, 0]
    z = x.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    q0 = q1 = q2 = q3 = z
    L4 = L - L % 4
    for n in range(N):
        row = x[n, c]
        for k in range(0, L4, 4):
            d0 = row[k] - shift
            d1 = row[k + 1] - shift
            d2 = row[k + 2] - shift
            d3 = row[k + 3] - shift
            s0 += d0
            s1 += d1
            s2 += d2
            s3 += d3
            q0 += d0 * d0
            q1 += d1 * d1
            q2 += d2 * d2
            q3 += d3 * d3
        for k in range(L4, L):
            d = row[k] - shift
            s0 += d
            q0 += d * d
    s = (s0 + s1) + (s2 + s3)
    ss = (q0 + q1) + (q2 + q3)
    M = N * L
    m = s / M
    var = (ss - s * m) / M
    if var < 0:  # rounding: a constant channel gives a tiny negative number
        var = x.dtype.type(0)
    return shift + m, var


@njit(cache=True, fastmath=_FM)
def _bn_channel_normalise(x, y, c, mean, invstd, gamma, beta):
    """y[:, c, :] = (x - mean) * (gamma * invstd) + beta  (BN3), (BN4)."""
    a = gamma * invstd
    for n in range(x.shape[0]):
        row = x[n, c]
        out = y[n, c]
        for k in range(x.shape[2]):
            out[k] = (row[k] - mean) * a + beta


@njit(cache=True, fastmath=_FM)
def _bn_channel_statistics(x, c, mean, var, invstd, training, eps):
    """Channel c's mean and var from the batch (BN1), (BN2) when training (else the running ones already in
    mean, var (BN10)), and invstd = 1 / sqrt(var + eps) (BN3)."""
    if training:
        m, v = _bn_channel_stats(x, c)
        mean[c] = m
        var[c] = v
    invstd[c] = 1 / np.sqrt(var[c] + eps)


@njit(cache=True, fastmath=_FM)
def _bn_channel_forward(x, y, c, w, b, mean, var, invstd, training, eps):
    _bn_channel_statistics(x, c, mean, var, invstd, training, eps)
    _bn_channel_normalise(x, y, c, mean[c], invstd[c], w[c], b[c])


@njit(cache=True, fastmath=_FM, parallel=True)
def _bn_forward(x, y, w, b, mean, var, invstd, training, eps):
    for c in prange(x.shape[1]):
        _bn_channel_forward(x, y, c, w, b, mean, var, invstd, training, eps)


@njit(cache=True, fastmath=_FM)
def _bn_forward_serial(x, y, w, b, mean, var, invstd, training, eps):
    for c in range(x.shape[1]):
        _bn_channel_forward(x, y, c, w, b, mean, var, invstd, training, eps)


@njit(cache=True, fastmath=_FM)
def _bn_channel_backward(gy, x, gx, c, w, mean, invstd, dgamma, dbeta, training):
    """Channel c: dbeta = sum g (BN5), dgamma = sum g x_hat (BN6), then dL/dx by (BN7) or (BN11)."""
    N, _, L = x.shape
    m = mean[c]
    inv = invstd[c]
    z = x.dtype.type(0)
    a0 = a1 = a2 = a3 = z  # four partial sums of g and of g (x - mean), as in _bn_channel_stats
    b0 = b1 = b2 = b3 = z
    L4 = L - L % 4
    for n in range(N):
        grow = gy[n, c]
        xrow = x[n, c]
        for k in range(0, L4, 4):
            a0 += grow[k]
            a1 += grow[k + 1]
            a2 += grow[k + 2]
            a3 += grow[k + 3]
            b0 += grow[k] * (xrow[k] - m)
            b1 += grow[k + 1] * (xrow[k + 1] - m)
            b2 += grow[k + 2] * (xrow[k + 2] - m)
            b3 += grow[k + 3] * (xrow[k + 3] - m)
        for k in range(L4, L):
            a0 += grow[k]
            b0 += grow[k] * (xrow[k] - m)
    sg = (a0 + a1) + (a2 + a3)
    sgx = ((b0 + b1) + (b2 + b3)) * inv  # sum g * x_hat
    dbeta[c] = sg
    dgamma[c] = sgx
    k_ = w[c] * inv
    a = sg / (N * L) if training else x.dtype.type(0)  # (BN7): sum g_hat / M, with gamma taken out into k_
    bcoef = sgx * inv / (N * L) if training else x.dtype.type(0)  # (BN7): sum(g_hat x_hat) / M, per (x - mean)
    for n in range(N):
        grow = gy[n, c]
        xrow = x[n, c]
        out = gx[n, c]
        for k in range(L):
            out[k] = k_ * (grow[k] - a - (xrow[k] - m) * bcoef)


@njit(cache=True, fastmath=_FM, parallel=True)
def _bn_backward(gy, x, gx, w, mean, invstd, dgamma, dbeta, training):
    for c in prange(x.shape[1]):
        _bn_channel_backward(gy, x, gx, c, w, mean, invstd, dgamma, dbeta, training)


@njit(cache=True, fastmath=_FM)
def _bn_backward_serial(gy, x, gx, w, mean, invstd, dgamma, dbeta, training):
    for c in range(x.shape[1]):
        _bn_channel_backward(gy, x, gx, c, w, mean, invstd, dgamma, dbeta, training)


# (N, C) features (L = 1): a channel's values are a column, C apart in memory.  One task per block of _COLS
# channels instead, walking the rows in order: each row's block is contiguous (vector loads), and each
# channel's sums still run over n = 0, 1, ... in order on one thread.
_COLS = 64


@njit(cache=True, fastmath=_FM)
def _bnf_block(x, y, w, b, mean, var, invstd, training, eps, c0, c1):
    N = x.shape[0]
    if training:
        shift = x[0, c0:c1].copy()
        s = np.zeros(c1 - c0, x.dtype)
        ss = np.zeros(c1 - c0, x.dtype)
        for n in range(N):
            row = x[n, c0:c1]
            for k in range(c1 - c0):
                d = row[k] - shift[k]
                s[k] += d
                ss[k] += d * d
        for k in range(c1 - c0):
            m = s[k] / N
            v = (ss[k] - s[k] * m) / N
            mean[c0 + k] = shift[k] + m
            var[c0 + k] = v if v > 0 else x.dtype.type(0)
    a = np.empty(c1 - c0, x.dtype)
    for k in range(c1 - c0):
        invstd[c0 + k] = 1 / np.sqrt(var[c0 + k] + eps)
        a[k] = w[c0 + k] * invstd[c0 + k]
    mu = mean[c0:c1]
    beta = b[c0:c1]
    for n in range(N):
        row = x[n, c0:c1]
        out = y[n, c0:c1]
        for k in range(c1 - c0):
            out[k] = (row[k] - mu[k]) * a[k] + beta[k]


@njit(cache=True, fastmath=_FM, parallel=True)
def _bn_forward_features(x, y, w, b, mean, var, invstd, training, eps):
    C = x.shape[1]
    for blk in prange((C + _COLS - 1) // _COLS):
        _bnf_block(x, y, w, b, mean, var, invstd, training, eps, blk * _COLS, min(blk * _COLS + _COLS, C))


@njit(cache=True, fastmath=_FM)
def _bnf_block_backward(gy, x, gx, w, mean, invstd, dgamma, dbeta, training, c0, c1):
    N = x.shape[0]
    mu = mean[c0:c1]
    sg = np.zeros(c1 - c0, x.dtype)
    sgx = np.zeros(c1 - c0, x.dtype)
    for n in range(N):
        grow = gy[n, c0:c1]
        xrow = x[n, c0:c1]
        for k in range(c1 - c0):
            g = grow[k]
            sg[k] += g
            sgx[k] += g * (xrow[k] - mu[k])
    kk = np.empty(c1 - c0, x.dtype)
    a = np.zeros(c1 - c0, x.dtype)
    bcoef = np.zeros(c1 - c0, x.dtype)
    for k in range(c1 - c0):
        inv = invstd[c0 + k]
        dbeta[c0 + k] = sg[k]
        dgamma[c0 + k] = sgx[k] * inv
        kk[k] = w[c0 + k] * inv
        if training:
            a[k] = sg[k] / N
            bcoef[k] = sgx[k] * inv * inv / N
    for n in range(N):
        grow = gy[n, c0:c1]
        xrow = x[n, c0:c1]
        out = gx[n, c0:c1]
        for k in range(c1 - c0):
            out[k] = kk[k] * (grow[k] - a[k] - (xrow[k] - mu[k]) * bcoef[k])


@njit(cache=True, fastmath=_FM, parallel=True)
def _bn_backward_features(gy, x, gx, w, mean, invstd, dgamma, dbeta, training):
    C = x.shape[1]
    for blk in prange((C + _COLS - 1) // _COLS):
        _bnf_block_backward(gy, x, gx, w, mean, invstd, dgamma, dbeta, training, blk * _COLS,
                            min(blk * _COLS + _COLS, C))


def _affine(a, C, dtype, fill):
    return np.full(C, fill, dtype=dtype) if a is None else np.ascontiguousarray(a, dtype=dtype)


def batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """``reference.batch_norm_forward``, one task per channel: (y, mean, invstd); running statistics updated in
    place when training (BN8), (BN9)."""
    x = np.ascontiguousarray(x)
    C, dt = x.shape[1], x.dtype
    y = np.empty_like(x)
    if training:
        mean, var = np.empty(C, dt), np.empty(C, dt)
    else:
        mean, var = np.array(running_mean, dtype=dt), np.array(running_var, dtype=dt)  # (BN10)
    invstd = np.empty(C, dt)
    args = (_affine(weight, C, dt, 1), _affine(bias, C, dt, 0), mean, var, invstd, bool(training), dt.type(eps))
    if x.shape[2] == 1 and C >= 8:  # (N, C) features: blocks of channels, row by row
        _bn_forward_features(x[:, :, 0], y[:, :, 0], *args)
    else:
        kernel = _bn_forward if x.size >= NORM_PARALLEL_MIN_ELEMENTS and C > 1 else _bn_forward_serial
        kernel(x, y, *args)
    if training and running_mean is not None:
        update_running_stats(running_mean, running_var, num_batches_tracked, mean, var,
                             x.shape[0] * x.shape[2], momentum)
    return y, mean, invstd


def batch_norm_backward(grad_y, x, weight, mean, invstd, training, out=(None, None)):
    """``reference.batch_norm_backward``, one task per channel: (dL/dx, dL/dgamma, dL/dbeta); ``out`` as there."""
    gy, x = np.ascontiguousarray(grad_y), np.ascontiguousarray(x)
    C, dt = x.shape[1], x.dtype
    gx = np.empty_like(x)
    dgamma, dbeta = np.empty(C, dt), np.empty(C, dt)
    args = (_affine(weight, C, dt, 1), np.ascontiguousarray(mean, dtype=dt), np.ascontiguousarray(invstd, dtype=dt),
            dgamma, dbeta, bool(training))
    if x.shape[2] == 1 and C >= 8:  # (N, C) features: blocks of channels, row by row
        _bn_backward_features(gy[:, :, 0], x[:, :, 0], gx[:, :, 0], *args)
    else:
        kernel = _bn_backward if x.size >= NORM_PARALLEL_MIN_ELEMENTS and C > 1 else _bn_backward_serial
        kernel(gy, x, gx, *args)
    return gx, written(out[0], dgamma), written(out[1], dbeta)


# --- LayerNorm (derivations/15-layernorm-dropout.md) ---------------------------------------------------------

@njit(cache=True, fastmath=_FM)
def _ln_row(x, y, r, w, b, mean, invstd, eps):
    """Row r: its mean and biased variance (LD1), (LD2) in one shifted pass, then y = gamma x_hat + beta (LD3)."""
    row = x[r]
    D = row.shape[0]
    shift = row[0]
    s = x.dtype.type(0)
    ss = x.dtype.type(0)
    for j in range(D):
        d = row[j] - shift
        s += d
        ss += d * d
    m = s / D
    var = (ss - s * m) / D
    if var < 0:
        var = x.dtype.type(0)
    mu = shift + m
    inv = 1 / np.sqrt(var + eps)
    mean[r] = mu
    invstd[r] = inv
    out = y[r]
    for j in range(D):
        out[j] = (row[j] - mu) * inv * w[j] + b[j]


@njit(cache=True, fastmath=_FM, parallel=True)
def _ln_forward(x, y, w, b, mean, invstd, eps):
    for r in prange(x.shape[0]):
        _ln_row(x, y, r, w, b, mean, invstd, eps)


@njit(cache=True, fastmath=_FM)
def _ln_forward_serial(x, y, w, b, mean, invstd, eps):
    for r in range(x.shape[0]):
        _ln_row(x, y, r, w, b, mean, invstd, eps)


@njit(cache=True, fastmath=_FM)
def _ln_row_backward(gy, x, gx, r, w, mean, invstd):
    """Row r: dL/dx = invstd (g_hat - mean(g_hat) - x_hat mean(g_hat x_hat)), g_hat = gamma g  (LD4)."""
    grow, xrow, out = gy[r], x[r], gx[r]
    D = xrow.shape[0]
    mu, inv = mean[r], invstd[r]
    sg = x.dtype.type(0)
    sgx = x.dtype.type(0)
    for j in range(D):
        g = grow[j] * w[j]
        sg += g
        sgx += g * (xrow[j] - mu)
    a = sg / D
    bcoef = sgx * inv * inv / D
    for j in range(D):
        out[j] = inv * (grow[j] * w[j] - a - (xrow[j] - mu) * bcoef)


@njit(cache=True, fastmath=_FM, parallel=True)
def _ln_backward(gy, x, gx, w, mean, invstd):
    for r in prange(x.shape[0]):
        _ln_row_backward(gy, x, gx, r, w, mean, invstd)


@njit(cache=True, fastmath=_FM)
def _ln_backward_serial(gy, x, gx, w, mean, invstd):
    for r in range(x.shape[0]):
        _ln_row_backward(gy, x, gx, r, w, mean, invstd)


_LN_COLUMNS = 64  # columns per task of the parameter gradients


@njit(cache=True, fastmath=_FM, parallel=True)
def _ln_params(gy, x, mean, invstd, dgamma, dbeta):
    """dgamma[j] = sum_r g x_hat, dbeta[j] = sum_r g  (LD5): one task per block of 64 columns, rows in order."""
    R, D = x.shape
    for blk in prange((D + _LN_COLUMNS - 1) // _LN_COLUMNS):
        j0 = blk * _LN_COLUMNS
        j1 = min(j0 + _LN_COLUMNS, D)
        for j in range(j0, j1):
            dgamma[j] = 0
            dbeta[j] = 0
        for r in range(R):
            mu, inv = mean[r], invstd[r]
            for j in range(j0, j1):
                g = gy[r, j]
                dbeta[j] += g
                dgamma[j] += g * (x[r, j] - mu) * inv


def layer_norm_forward(x, weight, bias, eps):
    """``reference.layer_norm_forward``, one task per row: (y, mean, invstd)."""
    x = np.ascontiguousarray(x)
    R, D = x.shape
    dt = x.dtype
    y = np.empty_like(x)
    mean, invstd = np.empty(R, dt), np.empty(R, dt)
    kernel = _ln_forward if x.size >= NORM_PARALLEL_MIN_ELEMENTS and R > 1 else _ln_forward_serial
    if x.size:
        kernel(x, y, _affine(weight, D, dt, 1), _affine(bias, D, dt, 0), mean, invstd, dt.type(eps))
    return y, mean, invstd


def layer_norm_backward(grad_y, x, weight, mean, invstd, out=(None, None)):
    """``reference.layer_norm_backward``: dL/dx one task per row, the parameter gradients one per column block;
    ``out`` as there."""
    gy, x = np.ascontiguousarray(grad_y), np.ascontiguousarray(x)
    R, D = x.shape
    dt = x.dtype
    gx = np.empty_like(x)
    dgamma, dbeta = np.zeros(D, dt), np.zeros(D, dt)
    mean, invstd = np.ascontiguousarray(mean, dtype=dt), np.ascontiguousarray(invstd, dtype=dt)
    if x.size:
        kernel = _ln_backward if x.size >= NORM_PARALLEL_MIN_ELEMENTS and R > 1 else _ln_backward_serial
        kernel(gy, x, gx, _affine(weight, D, dt, 1), mean, invstd)
        _ln_params(gy, x, mean, invstd, dgamma, dbeta)
    return gx, written(out[0], dgamma), written(out[1], dbeta)


# --- Dropout (derivations/15-layernorm-dropout.md) ---------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def _bits(key, index):
    """``reference.dropout_bits``: splitmix64's finaliser of key + (index + 1) * golden, top 24 bits (LD8)."""
    z = key + (np.uint64(index) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.int64(z >> np.uint64(40))


@njit(cache=True)
def _dropout_rows(x, y, mask, key, threshold, scale, inner, r0, r1):
    zero = x.dtype.type(0)
    for r in range(r0, r1):
        keep = _bits(key, r) >= threshold
        mask[r] = 1 if keep else 0
        f = scale if keep else zero
        for k in range(r * inner, (r + 1) * inner):
            y[k] = x[k] * f  # (LD6)


@njit(cache=True, parallel=True)
def _dropout(x, y, mask, key, threshold, scale, inner, tasks):
    R = mask.shape[0]
    for t in prange(tasks):
        _dropout_rows(x, y, mask, key, threshold, scale, inner, t * R // tasks, (t + 1) * R // tasks)


def dropout_forward(x, p, key, inner, inplace):
    """``reference.dropout_forward``: the same mask for the same key (the hash of (key, row), (LD8))."""
    if not inplace:
        x = np.ascontiguousarray(x)
    R = x.size // inner if inner else 0
    mask = np.empty(R, np.uint8)
    flat_x = x.reshape(-1)
    y = x if inplace else np.empty_like(x)
    if x.size:
        args = (flat_x, y.reshape(-1), mask, np.uint64(key), np.int64(dropout_threshold(p)),
                dropout_scale(p, x.dtype), np.int64(inner))
        if x.size >= NORM_PARALLEL_MIN_ELEMENTS and R > 1:
            _dropout(*args, np.int64(min(R, 64)))
        else:
            _dropout_rows(*args, np.int64(0), np.int64(R))
    return y, mask


def dropout_backward(grad_y, mask, p, inner):
    """dL/dx = mask * dL/dy / (1 - p)  (LD7): one NumPy pass (nothing to fuse)."""
    factor = np.repeat(mask.astype(grad_y.dtype) * dropout_scale(p, grad_y.dtype), inner)
    return np.ascontiguousarray(grad_y * factor.reshape(grad_y.shape))
