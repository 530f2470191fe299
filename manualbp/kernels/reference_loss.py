"""The losses in plain NumPy: the readable specification of every loss operation.

Derivations: derivations/07-regression-losses.md ((R1)-(R10)), derivations/08-binary-cross-entropy.md
((B1)-(B6)), derivations/02-softmax-cross-entropy.md ((S1)-(S8)).  ``reference.py`` imports every name
here, so these are ``reference.<name>`` too; the GPU's twins are in ``kernels/cuda/loss*.py``.

A loss is computed in three steps, each an operation of ``kernels/__init__.py``:

    ell = <loss>(input, target, ...)        the loss of each element (or sample), unreduced
    L   = loss_reduce(ell, reduction, D)    (R1): ell itself, its sum, or its sum / D
    s   = loss_upstream(g, reduction, D)    (R2): dL/d(ell) from the gradient g arriving from above
    dL/d(input) = <loss>_backward(s, ...)   s times the local slope d(ell)/d(input)

``s`` is a scalar for 'mean'/'sum' (the same for every element) and an array of ell's shape for
'none'.  Every function computes in the input's dtype and expects validated arrays: the loss modules
of ``manualbp/nn/`` check shapes, dtypes and values first.

Legend: N batch, C classes, S the positions of a sample beyond the class axis (d1*d2*...: 1 for (N, C)
input).  The class losses take the input as (N, C, S) and the class indices as (N, S), int64.
"""
import numpy as np

# torch's EPSILON in binary_cross_entropy_backward is a float constant 1e-12, so in float64 it is
# float64(float32(1e-12)) = 9.99999996e-13, not 1e-12: kept so the gradient at x = 0 or 1 matches.
BCE_EPS = np.float32(1e-12)


# --- the reduction (derivations/07-regression-losses.md) ---------------------------------------------


def loss_reduce(ell, reduction, denom):
    """(R1): ``ell`` for 'none', else sum(ell) ('sum') or sum(ell) / denom ('mean'), a scalar of ell's
    dtype (0/0 is nan, as in torch)."""
    ell = np.asarray(ell)  # NumPy hands a 0-d result back as a scalar; 'none' promises an array
    if reduction == "none":
        return ell
    dt = ell.dtype.type
    total = ell.sum(dtype=ell.dtype)
    if reduction == "sum":
        return dt(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dt(total / dt(denom))


def loss_upstream(grad, reduction, denom):
    """(R2): dL/d(ell) from ``grad`` = dL/dL (a scalar; an array of ell's shape for 'none'): grad / denom
    for 'mean', grad itself otherwise.  A scalar keeps its dtype (the caller casts it)."""
    if reduction != "mean":
        return grad
    with np.errstate(invalid="ignore", divide="ignore"):
        return grad / type(grad)(denom)


# --- regression losses: ell of d = input - target, element by element ---------------------------------


def l1_loss(x, t):
    """ell = |x - t|  (R3)."""
    return np.abs(x - t)


def l1_loss_backward(s, x, t):
    """s * sign(x - t)  (R2) times (R4); sign(0) = 0, as torch."""
    return s * np.sign(x - t)


def mse_loss(x, t):
    """ell = (x - t)^2  (R5)."""
    d = x - t
    return d * d


def mse_loss_backward(s, x, t):
    """s * 2 (x - t)  (R2) times (R6)."""
    return s * (x.dtype.type(2) * (x - t))


def smooth_l1_loss(x, t, beta):
    """ell = 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta  (R7); beta = 0 is L1."""
    b, half = x.dtype.type(beta), x.dtype.type(0.5)
    d = x - t
    with np.errstate(divide="ignore", invalid="ignore"):  # d^2 / 0 is computed but unused when beta = 0
        return np.where(np.abs(d) < b, half * d * d / b, np.abs(d) - half * b)


def smooth_l1_loss_backward(s, x, t, beta):
    """s * (d / beta inside the quadratic zone, sign(d) outside)  (R2) times (R8)."""
    b = x.dtype.type(beta)
    d = x - t
    with np.errstate(divide="ignore", invalid="ignore"):
        return s * np.where(np.abs(d) < b, d / b, np.sign(d))


def huber_loss(x, t, delta):
    """ell = 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)  (R9)."""
    dl, half = x.dtype.type(delta), x.dtype.type(0.5)
    d = x - t
    return np.where(np.abs(d) < dl, half * d * d, dl * (np.abs(d) - half * dl))


def huber_loss_backward(s, x, t, delta):
    """s * (d inside the quadratic zone, delta sign(d) outside)  (R2) times (R10)."""
    dl = x.dtype.type(delta)
    d = x - t
    return s * np.where(np.abs(d) < dl, d, dl * np.sign(d))


# --- binary cross-entropy (derivations/08-binary-cross-entropy.md) -----------------------------------


def bce_loss(x, t, w):
    """ell = -w [t max(log x, -100) + (1 - t) max(log(1 - x), -100)]  (B1); w: None or x's shape."""
    one, floor = x.dtype.type(1), x.dtype.type(-100)
    with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped
        log_x = np.maximum(np.log(x), floor)
        log_1mx = np.maximum(np.log1p(-x), floor)  # log(1 - x), accurate for small x
    ell = (t - one) * log_1mx - t * log_x
    return ell if w is None else ell * w


def bce_loss_backward(s, x, t, w):
    """s * w (x - t) / max(x (1 - x), eps)  (B2), torch's formula (the clamp of (B1) is ignored)."""
    one = x.dtype.type(1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        g = (x - t) / np.maximum((one - x) * x, x.dtype.type(BCE_EPS))
        return s * (g if w is None else g * w)


def bce_with_logits_loss(z, t, w, pw):
    """ell = w [(1 - t) z - (1 + (pw - 1) t) log s(z)]  (B4), log s(z) by (B3); w, pw: None or z's shape."""
    one = z.dtype.type(1)
    log_s = np.minimum(z, z.dtype.type(0)) - np.log1p(np.exp(-np.abs(z)))  # (B3)
    if pw is not None:
        log_s = log_s * (one + (pw - one) * t)
    ell = (one - t) * z - log_s
    return ell if w is None else ell * w


def bce_with_logits_loss_backward(s, z, t, w, pw):
    """s * w [(1 + (pw - 1) t) s(z) - pw t]  (B5): s * (s(z) - t) without weights; s(z) by (B6)."""
    one = z.dtype.type(1)
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, one / (one + e), e / (one + e))  # (B6)
    if pw is None:
        g = sig - t
    else:
        pt = pw * t
        g = (pt + one - t) * sig - pt
    return s * (g if w is None else g * w)


# --- classification: NLL and softmax-cross-entropy (derivations/02-softmax-cross-entropy.md) ------------


def _target_weight(t, w, ignore_index, dtype):
    """(y, w_y): the class of each (n, s) (0 where ignored, a safe index) and its weight w[y], 0 if ignored."""
    valid = t != ignore_index
    y = np.where(valid, t, 0)
    w_y = valid.astype(dtype) if w is None else np.where(valid, w.astype(dtype)[y], dtype.type(0))
    return y, w_y


def nll_loss(x, t, w, ignore_index):
    """(ell, D): ell[n, s] = -w[y] x[n, y, s] (0 where ignored)  (S3), D = sum of w_y  (S8).
    x (N, C, S) log-probabilities, t (N, S) int64, w (C,) or None."""
    y, w_y = _target_weight(t, w, ignore_index, x.dtype)
    x_y = np.take_along_axis(x, y[:, None, :], axis=1)[:, 0, :]  # the target's log-probability
    ell = np.where(t != ignore_index, -w_y * x_y, x.dtype.type(0))
    return ell, w_y.sum(dtype=x.dtype)


def nll_loss_backward(s, x_shape, t, w, ignore_index, dtype):
    """dL/dx (N, C, S): -s w[y] at the target class, 0 elsewhere and for ignored samples  (S4)."""
    y, w_y = _target_weight(t, w, ignore_index, np.dtype(dtype))
    s = np.broadcast_to(s, w_y.shape)
    grad = np.zeros(x_shape, dtype=dtype)
    g_y = np.where(t != ignore_index, -s * w_y, dtype(0))
    np.put_along_axis(grad, y[:, None, :], g_y[:, None, :], axis=1)
    return grad


def _log_softmax(z):
    """(p, log p) along axis 1  (S1), (S2)."""
    shifted = z - z.max(axis=1, keepdims=True)  # z - m: every exp(.) <= 1
    e = np.exp(shifted)
    sum_e = e.sum(axis=1, keepdims=True)
    return e / sum_e, shifted - np.log(sum_e)


def cross_entropy(z, t, w, ignore_index, label_smoothing):
    """(ell, D, p) of softmax-cross-entropy with class indices: z (N, C, S) logits, t (N, S) int64.

    ell[n, s] = (1 - eps) (-w_y log p_y) + (eps / C) (-sum_c w_c log p_c), 0 where ignored  (S5);
    D = sum of w_y over the counted samples, nan when it is 0 (torch divides both terms by it)  (S8);
    p = softmax(z) along C, kept for the backward (S7).
    """
    eps, dt = label_smoothing, z.dtype.type
    n_classes = z.shape[1]
    p, log_p = _log_softmax(z)
    y, w_y = _target_weight(t, w, ignore_index, z.dtype)
    ell = -w_y * np.take_along_axis(log_p, y[:, None, :], axis=1)[:, 0, :]  # (S3) on (S2)
    if eps > 0:
        w_log_p = log_p if w is None else log_p * w.astype(z.dtype)[None, :, None]
        ell = dt(1 - eps) * ell + dt(eps / n_classes) * -w_log_p.sum(axis=1)  # (S5)
    ell = np.where(t != ignore_index, ell, dt(0))
    denom = w_y.sum(dtype=z.dtype)
    return ell, (dt(np.nan) if denom == 0 else denom), p


def cross_entropy_backward(s, p, t, w, ignore_index, label_smoothing):
    """dL/dz (N, C, S) = s ((sum_c q_c) p - q), q = w y~, y~ = (1 - eps) onehot(y) + eps / C  (S7);
    0 for ignored samples.  s: a scalar or (N, S)."""
    eps, dt = label_smoothing, p.dtype.type
    n_classes = p.shape[1]
    y, _ = _target_weight(t, None, ignore_index, p.dtype)
    valid = (t != ignore_index)[:, None, :]
    s = np.expand_dims(np.broadcast_to(s, t.shape), 1)
    q = np.zeros_like(p)
    np.put_along_axis(q, y[:, None, :], dt(1 - eps), axis=1)
    q += dt(eps / n_classes)
    if w is not None:
        q *= w.astype(p.dtype)[None, :, None]
    with np.errstate(invalid="ignore"):
        return np.where(valid, s * (q.sum(axis=1, keepdims=True) * p - q), dt(0))


def cross_entropy_probs(z, y, w, label_smoothing):
    """(ell, p) with class-probability targets y (N, C, S):
    ell[n, s] = -sum_c w_c y~_c log p_c, y~ = (1 - eps) y + eps / C  (S6); 'mean' divides by N*S (S8)."""
    eps, dt = label_smoothing, z.dtype.type
    p, log_p = _log_softmax(z)
    q = _probability_weights(y, w, eps, z.shape[1], dt)
    return -(log_p * q).sum(axis=1), p


def cross_entropy_probs_backward(s, p, y, w, label_smoothing):
    """dL/dz = s ((sum_c q_c) p - q), q = w y~  (S7): p - y for plain probabilities summing to 1."""
    q = _probability_weights(y, w, label_smoothing, p.shape[1], p.dtype.type)
    s = np.expand_dims(np.broadcast_to(s, p.shape[:1] + p.shape[2:]), 1)
    return s * (q.sum(axis=1, keepdims=True) * p - q)


def _probability_weights(y, w, eps, n_classes, dt):
    """q = w y~ of (S7) with y~ = (1 - eps) y + eps / C."""
    y_smooth = y if eps == 0 else y * dt(1 - eps) + dt(eps / n_classes)
    return y_smooth if w is None else y_smooth * w.astype(y.dtype)[None, :, None]


def cross_entropy_index(z, t, ignore_index, mean=False):
    """Softmax-cross-entropy of (N, C) logits with class indices, forward and backward in one call.

    No class weights, no label smoothing: the common case of a training step, which
    ``nn.CrossEntropyLoss`` sends here.  t: int64 (N,); a value equal to ``ignore_index`` is not counted.

    Returns (total, count, bad, grad):
    - total: sum over the counted samples of ell_n = -log softmax(z[n])[t[n]]   (S2), (S3); with
      ``mean``, that sum divided by count: the loss of reduction 'mean' (S8), as ``loss_reduce`` gives it
    - count: the number of counted samples, D of (S8)
    - bad: the first sample whose target lies outside [0, C) and is not ignore_index, else -1
      (then nothing else is meaningful: the caller takes the general path, which raises)
    - grad: (N, C), softmax(z[n]) - onehot(t[n]) for a counted sample (S7), zeros otherwise
    """
    N, C = z.shape
    valid = t != ignore_index
    out_of_range = valid & ((t < 0) | (t >= C))
    if out_of_range.any():
        return z.dtype.type(0), 0, int(np.argmax(out_of_range)), np.zeros_like(z)
    y = np.where(valid, t, 0)  # a safe index for the ignored samples, masked out below
    rows = np.arange(N)
    shifted = z - z.max(axis=1, keepdims=True)  # z - m  (S1)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    grad = e / s  # p  (S1)
    ell = np.log(s[:, 0]) - shifted[rows, y]  # -log p_y  (S2), (S3)
    grad[rows, y] -= 1  # p - onehot(y)  (S7)
    grad[~valid] = 0
    count = int(valid.sum())
    total = ell[valid].sum(dtype=z.dtype)
    if mean:  # (S8), the same division as loss_reduce's
        dt = z.dtype.type
        with np.errstate(invalid="ignore", divide="ignore"):
            return dt(total / dt(count)), count, -1, grad
    return total, count, -1, grad
