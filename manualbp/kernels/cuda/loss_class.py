"""Class losses on the GPU: NLL and softmax-cross-entropy (class indices or probabilities), forward and backward.

Derivations: derivations/02-softmax-cross-entropy.md ((S1)-(S8)), derivations/11-gpu-tiled-matmul.md
(syncthreads).  NumPy twins: the functions of the same names in ``kernels/reference_loss.py``.

Layout, as the NumPy twins: the input is (N, C, S) (S = d1*d2*..., 1 for plain (N, C) input), the class
indices t are int64 (N, S), already validated (each in [0, C) or equal to ignore_index).  One thread
per line (n, s): it walks the C classes of its line in order c = 0..C-1, so every sum over classes has
a fixed order.  The weighted count D = sum of w[y] over the counted lines (S8), the divisor of 'mean',
is a one-block fixed-order reduction into a (1,) device array: it never visits the host.

Class weights ``w`` (C,) travel as a float32 array with no elements when absent; the upstream gradient
``s`` is scalar-like or an array of ell's shape (N, S), read as ``s_rows[i * s_step] * s_scale`` for
line i = n*S + s (see ``loss.py``).
"""
import math

import numpy as np
from numba import cuda, float32

from ...device import host_copy
from .buffers import empty
from .elementwise import tree_sum
from .launch import THREADS, blocks, device_f32, device_i64, flat, optional_f32, scalar_like
from .loss import sum_to_device

# --- device helpers -----------------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _target_weight(y, w, ignore_index):
    """w_y of (S8): w[y] (1 without weights), 0 for an ignored line."""
    if y == ignore_index:
        return float32(0.0)
    return w[y] if w.shape[0] > 0 else float32(1.0)


@cuda.jit(device=True, inline=True)
def _softmax_line(z, n, s, p):
    """p[n, :, s] = softmax(z[n, :, s])  (S1); returns (m, log sum e^(z - m)), so log p_c = z_c - m - lse  (S2)."""
    classes = z.shape[1]
    m = z[n, 0, s]
    for c in range(1, classes):
        m = max(m, z[n, c, s])
    total = float32(0.0)
    for c in range(classes):
        e = math.exp(z[n, c, s] - m)  # z - m <= 0: no overflow (S1)
        p[n, c, s] = e
        total += e
    for c in range(classes):
        p[n, c, s] = p[n, c, s] / total
    return m, math.log(total)


# --- the weighted count D (S8) --------------------------------------------------------------------------------


def _class_weight_sum(t, w, ignore_index, nan_if_zero, out):
    """One block: out[0] = sum over the lines of w_y (the count of counted lines without weights)  (S8);
    nan instead of 0 when ``nan_if_zero`` (cross-entropy: torch divides both terms by it).  Twin: the D of
    ``reference.nll_loss`` and ``reference.cross_entropy``."""
    buf = cuda.shared.array(THREADS, float32)
    k = cuda.threadIdx.x
    part = float32(0.0)
    for e in range(k, t.shape[0], THREADS):  # a fixed order for a given size: deterministic
        part += _target_weight(t[e], w, ignore_index)
    buf[k] = part
    total = tree_sum(buf)
    if k == 0:
        out[0] = float32(math.nan) if nan_if_zero and total == float32(0.0) else total


class_weight_sum_kernel = cuda.jit(_class_weight_sum)


def _weight_sum(t_flat, w, ignore_index, nan_if_zero):
    out = empty(1, dtype=np.float32)
    class_weight_sum_kernel[1, THREADS](t_flat, w, int(ignore_index), bool(nan_if_zero), out)
    return out


# --- negative log-likelihood (S3), (S4) -----------------------------------------------------------------------


def _nll_forward(x, t, w, ignore_index, ell):
    """Line i = (n, s): ell[i] = -w_y x[n, y, s], 0 where ignored  (S3).  Twin: ``reference.nll_loss``."""
    i = cuda.grid(1)
    S = x.shape[2]
    if i < x.shape[0] * S:
        n = i // S
        s = i - n * S
        y = t[i]
        if y == ignore_index:
            ell[i] = float32(0.0)
        else:
            ell[i] = -_target_weight(y, w, ignore_index) * x[n, y, s]


def _nll_backward(s_rows, s_step, s_scale, t, w, ignore_index, grad):
    """Element (n, c, s): -s w_y where c = y, 0 elsewhere and for ignored lines  (S4).
    Twin: ``reference.nll_loss_backward``."""
    e = cuda.grid(1)
    C, S = grad.shape[1], grad.shape[2]
    if e < grad.shape[0] * C * S:
        n = e // (C * S)
        c = (e // S) % C
        s = e % S
        i = n * S + s
        y = t[i]
        g = float32(0.0)
        if y != ignore_index and c == y:
            g = -(s_rows[i * s_step] * s_scale) * _target_weight(y, w, ignore_index)
        grad[n, c, s] = g


nll_forward_kernel = cuda.jit(_nll_forward)
nll_backward_kernel = cuda.jit(_nll_backward)


def _class_args(x_shape, t, w, who):
    N, C, S = (int(v) for v in x_shape)
    device_i64(t, who, "t", shape=(N, S))
    return N, C, S, optional_f32(w, who, "w", (C,))


def nll_loss(x, t, w, ignore_index):
    """(ell, D): ell (N, S) = -w[y] x[n, y, s], 0 where ignored  (S3); D = sum of w[y], a (1,) device array (S8).

    NumPy twin: ``reference.nll_loss``.  x (N, C, S) log-probabilities, t (N, S) int64, w (C,) or None.
    """
    who = "cuda nll_loss"
    device_f32(x, who, "x", ndim=3)
    N, _, S, w_ = _class_args(x.shape, t, w, who)
    ell = empty((N, S), dtype=np.float32)
    if ell.size:
        nll_forward_kernel[blocks(ell.size), THREADS](x, flat(t), w_, int(ignore_index), flat(ell))
    return ell, _weight_sum(flat(t), w_, ignore_index, False)


def nll_loss_backward(s, x_shape, t, w, ignore_index, dtype):
    """dL/dx (N, C, S): -s w[y] at the target class, 0 elsewhere and for ignored lines  (S4).

    NumPy twin: ``reference.nll_loss_backward``.  s: scalar-like or (N, S); dtype must be float32.
    """
    who = "cuda nll_loss_backward"
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"{who}: the GPU kernels run in float32, got dtype {np.dtype(dtype)}")
    N, C, S, w_ = _class_args(x_shape, t, w, who)
    s_rows, s_step, s_scale = scalar_like(s, N * S, who)
    grad = empty((N, C, S), dtype=np.float32)
    if grad.size:
        nll_backward_kernel[blocks(grad.size), THREADS](s_rows, s_step, s_scale, flat(t), w_, int(ignore_index),
                                                         grad)
    return grad


# --- softmax-cross-entropy with class indices (S5), (S7) --------------------------------------------------------


def _cross_entropy_forward(z, t, w, ignore_index, smooth, one_minus_eps, eps_over_c, ell, p):
    """Line i = (n, s): p = softmax  (S1); ell = -w_y log p_y  (S3), blended with the uniform target
    when ``smooth``: (1 - eps) ell + (eps / C) (-sum_c w_c log p_c)  (S5); 0 where ignored.
    Twin: ``reference.cross_entropy``."""
    i = cuda.grid(1)
    C, S = z.shape[1], z.shape[2]
    if i < z.shape[0] * S:
        n = i // S
        s = i - n * S
        m, lse = _softmax_line(z, n, s, p)
        y = t[i]
        if y == ignore_index:
            ell[i] = float32(0.0)
        else:
            e = -_target_weight(y, w, ignore_index) * ((z[n, y, s] - m) - lse)  # (S3) on (S2)
            if smooth:
                acc = float32(0.0)
                for c in range(C):
                    log_p = (z[n, c, s] - m) - lse
                    acc += log_p * w[c] if w.shape[0] > 0 else log_p
                e = one_minus_eps * e + eps_over_c * -acc  # (S5)
            ell[i] = e


def _cross_entropy_backward(s_rows, s_step, s_scale, p, t, w, ignore_index, one_minus_eps, eps_over_c, grad):
    """Line i = (n, s): grad[n, :, s] = s ((sum_c q_c) p - q), q_c = w_c ((1 - eps) [c = y] + eps / C)  (S7);
    0 for an ignored line.  Twin: ``reference.cross_entropy_backward``."""
    i = cuda.grid(1)
    C, S = p.shape[1], p.shape[2]
    if i < p.shape[0] * S:
        n = i // S
        s = i - n * S
        y = t[i]
        if y == ignore_index:
            for c in range(C):
                grad[n, c, s] = float32(0.0)
        else:
            sv = s_rows[i * s_step] * s_scale
            total = float32(0.0)  # sum_c q_c
            for c in range(C):
                q = (one_minus_eps if c == y else float32(0.0)) + eps_over_c
                total += q * w[c] if w.shape[0] > 0 else q
            for c in range(C):
                q = (one_minus_eps if c == y else float32(0.0)) + eps_over_c
                if w.shape[0] > 0:
                    q = q * w[c]
                grad[n, c, s] = sv * (total * p[n, c, s] - q)  # (S7)


cross_entropy_forward_kernel = cuda.jit(_cross_entropy_forward)
cross_entropy_backward_kernel = cuda.jit(_cross_entropy_backward)


def _smoothing(label_smoothing, classes):
    """(1 - eps, eps / C) in float32, computed in float64 first as the NumPy twin does."""
    eps = float(label_smoothing)
    return np.float32(1.0 - eps), np.float32(eps / classes if classes else 0.0)


def cross_entropy(z, t, w, ignore_index, label_smoothing):
    """(ell, D, p) of softmax-cross-entropy with class indices  (S5), (S8), (S1).

    NumPy twin: ``reference.cross_entropy``.  z (N, C, S) logits, t (N, S) int64, w (C,) or None.
    ell (N, S), 0 where ignored; D a (1,) device array, the sum of w[y] over the counted lines, nan
    when it is 0; p (N, C, S) the softmax, kept for the backward.
    """
    who = "cuda cross_entropy"
    device_f32(z, who, "z", ndim=3)
    N, C, S, w_ = _class_args(z.shape, t, w, who)
    ome, eoc = _smoothing(label_smoothing, C)
    ell = empty((N, S), dtype=np.float32)
    p = empty((N, C, S), dtype=np.float32)
    if ell.size and C:
        cross_entropy_forward_kernel[blocks(ell.size), THREADS](z, flat(t), w_, int(ignore_index),
                                                                 bool(label_smoothing > 0), ome, eoc, flat(ell), p)
    return ell, _weight_sum(flat(t), w_, ignore_index, True), p


def cross_entropy_backward(s, p, t, w, ignore_index, label_smoothing):
    """dL/dz (N, C, S) = s ((sum_c q_c) p - q), q = w ((1 - eps) onehot(y) + eps / C)  (S7); 0 where ignored.

    NumPy twin: ``reference.cross_entropy_backward``.  s: scalar-like or (N, S).
    """
    who = "cuda cross_entropy_backward"
    device_f32(p, who, "p", ndim=3)
    N, C, S, w_ = _class_args(p.shape, t, w, who)
    ome, eoc = _smoothing(label_smoothing, C)
    s_rows, s_step, s_scale = scalar_like(s, N * S, who)
    grad = empty((N, C, S), dtype=np.float32)
    if N * S and C:
        cross_entropy_backward_kernel[blocks(N * S), THREADS](s_rows, s_step, s_scale, p, flat(t), w_,
                                                               int(ignore_index), ome, eoc, grad)
    return grad


# --- softmax-cross-entropy with class probabilities (S6), (S7) ---------------------------------------------------


@cuda.jit(device=True, inline=True)
def _probability_weight(y, w, n, c, s, one_minus_eps, eps_over_c):
    """q_c = w_c y~_c with y~ = (1 - eps) y + eps / C  (S7); exact y when eps = 0 (y * 1 + 0)."""
    q = y[n, c, s] * one_minus_eps + eps_over_c
    return q * w[c] if w.shape[0] > 0 else q


def _cross_entropy_probs_forward(z, y, w, one_minus_eps, eps_over_c, ell, p):
    """Line i = (n, s): p = softmax  (S1); ell = -sum_c q_c log p_c  (S6).  Twin: ``reference.cross_entropy_probs``."""
    i = cuda.grid(1)
    C, S = z.shape[1], z.shape[2]
    if i < z.shape[0] * S:
        n = i // S
        s = i - n * S
        m, lse = _softmax_line(z, n, s, p)
        acc = float32(0.0)
        for c in range(C):
            acc += ((z[n, c, s] - m) - lse) * _probability_weight(y, w, n, c, s, one_minus_eps, eps_over_c)
        ell[i] = -acc  # (S6)


def _cross_entropy_probs_backward(s_rows, s_step, s_scale, p, y, w, one_minus_eps, eps_over_c, grad):
    """Line i = (n, s): grad[n, :, s] = s ((sum_c q_c) p - q)  (S7): p - y for plain probabilities.
    Twin: ``reference.cross_entropy_probs_backward``."""
    i = cuda.grid(1)
    C, S = p.shape[1], p.shape[2]
    if i < p.shape[0] * S:
        n = i // S
        s = i - n * S
        sv = s_rows[i * s_step] * s_scale
        total = float32(0.0)
        for c in range(C):
            total += _probability_weight(y, w, n, c, s, one_minus_eps, eps_over_c)
        for c in range(C):
            q = _probability_weight(y, w, n, c, s, one_minus_eps, eps_over_c)
            grad[n, c, s] = sv * (total * p[n, c, s] - q)  # (S7)


cross_entropy_probs_forward_kernel = cuda.jit(_cross_entropy_probs_forward)
cross_entropy_probs_backward_kernel = cuda.jit(_cross_entropy_probs_backward)


def cross_entropy_probs(z, y, w, label_smoothing):
    """(ell, p) with class-probability targets y (N, C, S): ell (N, S) = -sum_c w_c y~_c log p_c  (S6).

    NumPy twin: ``reference.cross_entropy_probs``.  'mean' divides by N*S (S8): a host number.
    """
    who = "cuda cross_entropy_probs"
    device_f32(z, who, "z", ndim=3)
    device_f32(y, who, "y", shape=z.shape)
    N, C, S = z.shape
    w_ = optional_f32(w, who, "w", (C,))
    ome, eoc = _smoothing(label_smoothing, C)
    ell = empty((N, S), dtype=np.float32)
    p = empty((N, C, S), dtype=np.float32)
    if ell.size and C:
        cross_entropy_probs_forward_kernel[blocks(ell.size), THREADS](z, y, w_, ome, eoc, flat(ell), p)
    return ell, p


def cross_entropy_probs_backward(s, p, y, w, label_smoothing):
    """dL/dz (N, C, S) = s ((sum_c q_c) p - q), q = w y~  (S7).  NumPy twin: ``reference.cross_entropy_probs_backward``."""
    who = "cuda cross_entropy_probs_backward"
    device_f32(p, who, "p", ndim=3)
    device_f32(y, who, "y", shape=p.shape)
    N, C, S = p.shape
    w_ = optional_f32(w, who, "w", (C,))
    ome, eoc = _smoothing(label_smoothing, C)
    s_rows, s_step, s_scale = scalar_like(s, N * S, who)
    grad = empty((N, C, S), dtype=np.float32)
    if N * S and C:
        cross_entropy_probs_backward_kernel[blocks(N * S), THREADS](s_rows, s_step, s_scale, p, y, w_, ome, eoc,
                                                                     grad)
    return grad


# --- the fused forward + backward of a training step (S1)-(S3), (S7) ---------------------------------------------


def _cross_entropy_index(z, t, ignore_index, ell, grad):
    """Row n of (N, C) logits: ell[n] = log sum e^(z - m) - (z_y - m)  (S2)(S3) and
    grad[n] = softmax - onehot(y)  (S7); both 0 for an ignored row.  Twin: ``reference.cross_entropy_index``."""
    n = cuda.grid(1)
    C = z.shape[1]
    if n < z.shape[0]:
        y = t[n]
        if y == ignore_index:
            ell[n] = float32(0.0)
            for c in range(C):
                grad[n, c] = float32(0.0)
        else:
            m = z[n, 0]
            for c in range(1, C):
                m = max(m, z[n, c])
            total = float32(0.0)
            for c in range(C):
                e = math.exp(z[n, c] - m)  # (S1)
                grad[n, c] = e
                total += e
            for c in range(C):
                grad[n, c] = grad[n, c] / total
            grad[n, y] -= float32(1.0)  # p - onehot(y)  (S7)
            ell[n] = math.log(total) - (z[n, y] - m)  # -log p_y  (S2), (S3)


cross_entropy_index_kernel = cuda.jit(_cross_entropy_index)


def cross_entropy_index(z, t, ignore_index, mean=False):
    """(total, count, bad, grad) of softmax-cross-entropy on (N, C) logits with (N,) int64 class indices.

    NumPy twin: ``reference.cross_entropy_index``.  total: a (1,) device array, the sum of ell over the
    counted rows (a fixed-order reduction; divided by count in the same kernel when ``mean``); count: the
    number of counted rows and bad: the first row whose target is out of range (-1 if none), both ints
    computed on the host from the N labels (the pinned host copy of a batch the Uploader sent up, else a
    copy from the GPU); grad (N, C) = softmax - onehot for a counted row, 0 otherwise.  With a bad target
    nothing is launched: (0, 0, bad, zeros), as the twin.
    """
    who = "cuda cross_entropy_index"
    device_f32(z, who, "z", ndim=2)
    N, C = z.shape
    device_i64(t, who, "t", shape=(N,))
    labels = host_copy(t)  # an uploaded batch's pinned copy; else one copy back
    valid = labels != ignore_index
    out_of_range = valid & ((labels < 0) | (labels >= C))
    if out_of_range.any():
        return cuda.to_device(np.zeros(1, np.float32)), 0, int(np.argmax(out_of_range)), \
            cuda.to_device(np.zeros((N, C), np.float32))
    ell = empty(N if C else 0, dtype=np.float32)  # C = 0: every row is ignored, the sum is 0
    grad = empty((N, C), dtype=np.float32)
    if N and C:
        cross_entropy_index_kernel[blocks(N), THREADS](z, t, int(ignore_index), ell, grad)
    count = int(valid.sum())
    return sum_to_device(ell, who, count if mean else None), count, -1, grad
