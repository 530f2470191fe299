"""The loss operations: each loss's element math and its reduction, dispatched like every operation of
``kernels/__init__.py`` (NumPy arrays to ``cpu/loss.py`` or ``reference_loss.py``, device arrays to
``cuda/``).  Read ``reference_loss.py`` for how the steps fit together:

    ell = <loss>(input, target, ...);  L = loss_reduce(ell, reduction, D)
    s = loss_upstream(g, reduction, D);  dL/d(input) = <loss>_backward(s, ...)

Derivations: derivations/07-regression-losses.md (R*), derivations/08-binary-cross-entropy.md (B*),
derivations/02-softmax-cross-entropy.md (S*).  Class losses take the input as (N, C, S) and the class
indices as int64 (N, S).
"""
from . import _impl


def loss_reduce(ell, reduction, denom):
    """(R1): the unreduced loss, its sum, or its sum / denom (a scalar; a (1,) device array on the GPU)."""
    return _impl("loss_reduce", ell).loss_reduce(ell, reduction, denom)

def loss_upstream(grad, reduction, denom):
    """(R2): dL/d(ell) from the gradient arriving from above: grad / denom for 'mean', else grad."""
    return _impl("loss_upstream", grad, denom).loss_upstream(grad, reduction, denom)

def l1_loss(x, t):
    """ell = |x - t|.  (R3)"""
    return _impl("l1_loss", x, t).l1_loss(x, t)

def l1_loss_backward(s, x, t):
    """s * sign(x - t).  (R2) times (R4)"""
    return _impl("l1_loss_backward", s, x, t).l1_loss_backward(s, x, t)

def mse_loss(x, t):
    """ell = (x - t)^2.  (R5)"""
    return _impl("mse_loss", x, t).mse_loss(x, t)

def mse_loss_backward(s, x, t):
    """s * 2 (x - t).  (R2) times (R6)"""
    return _impl("mse_loss_backward", s, x, t).mse_loss_backward(s, x, t)

def smooth_l1_loss(x, t, beta):
    """ell = 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta.  (R7)"""
    return _impl("smooth_l1_loss", x, t).smooth_l1_loss(x, t, beta)

def smooth_l1_loss_backward(s, x, t, beta):
    """s * (d / beta inside, sign(d) outside).  (R2) times (R8)"""
    return _impl("smooth_l1_loss_backward", s, x, t).smooth_l1_loss_backward(s, x, t, beta)

def huber_loss(x, t, delta):
    """ell = 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta).  (R9)"""
    return _impl("huber_loss", x, t).huber_loss(x, t, delta)

def huber_loss_backward(s, x, t, delta):
    """s * (d inside, delta sign(d) outside).  (R2) times (R10)"""
    return _impl("huber_loss_backward", s, x, t).huber_loss_backward(s, x, t, delta)

def bce_loss(x, t, w):
    """ell = -w [t log x + (1 - t) log(1 - x)], each log clamped at -100.  (B1)"""
    return _impl("bce_loss", x, t, w).bce_loss(x, t, w)

def bce_loss_backward(s, x, t, w):
    """s * w (x - t) / max(x (1 - x), 1e-12).  (B2)"""
    return _impl("bce_loss_backward", s, x, t, w).bce_loss_backward(s, x, t, w)

def bce_with_logits_loss(z, t, w, pw):
    """ell = w [(1 - t) z - (1 + (pw - 1) t) log sigmoid(z)].  (B3), (B4)"""
    return _impl("bce_with_logits_loss", z, t, w, pw).bce_with_logits_loss(z, t, w, pw)

def bce_with_logits_loss_backward(s, z, t, w, pw):
    """s * w [(1 + (pw - 1) t) sigmoid(z) - pw t].  (B5), (B6)"""
    return _impl("bce_with_logits_loss_backward", s, z, t, w, pw).bce_with_logits_loss_backward(s, z, t, w, pw)

def nll_loss(x, t, w, ignore_index):
    """(ell, D): ell = -w_y x_y per (n, s), 0 if ignored; D = sum of w_y.  (S3), (S8)"""
    return _impl("nll_loss", x, t, w).nll_loss(x, t, w, ignore_index)

def nll_loss_backward(s, x_shape, t, w, ignore_index, dtype):
    """-s w_y at the target class, 0 elsewhere.  (S4)"""
    return _impl("nll_loss_backward", s, t, w).nll_loss_backward(s, x_shape, t, w, ignore_index, dtype)

def cross_entropy(z, t, w, ignore_index, label_smoothing):
    """(ell, D, p): softmax-cross-entropy with class indices.  (S1)-(S3), (S5), (S8)"""
    return _impl("cross_entropy", z, t, w).cross_entropy(z, t, w, ignore_index, label_smoothing)

def cross_entropy_backward(s, p, t, w, ignore_index, label_smoothing):
    """s ((sum_c q_c) p - q), q = w y~.  (S7)"""
    return _impl("cross_entropy_backward", s, p, t, w).cross_entropy_backward(s, p, t, w, ignore_index, label_smoothing)

def cross_entropy_probs(z, y, w, label_smoothing):
    """(ell, p) with class-probability targets.  (S6)"""
    return _impl("cross_entropy_probs", z, y, w).cross_entropy_probs(z, y, w, label_smoothing)

def cross_entropy_probs_backward(s, p, y, w, label_smoothing):
    """s ((sum_c q_c) p - q), q = w y~.  (S7)"""
    return _impl("cross_entropy_probs_backward", s, p, y, w).cross_entropy_probs_backward(s, p, y, w, label_smoothing)

def cross_entropy_index(z, t, ignore_index, mean=False):
    """(total, count, bad, dL/dz of each sample): the training step's fused case.  (S1)-(S3), (S7); with
    ``mean`` the total is divided by the count in the same call (S8)."""
    return _impl("cross_entropy_index", z, t).cross_entropy_index(z, t, ignore_index, mean)


__all__ = ["bce_loss", "bce_loss_backward", "bce_with_logits_loss", "bce_with_logits_loss_backward",
           "cross_entropy", "cross_entropy_backward", "cross_entropy_index", "cross_entropy_probs",
           "cross_entropy_probs_backward", "huber_loss", "huber_loss_backward", "l1_loss", "l1_loss_backward",
           "loss_reduce", "loss_upstream", "mse_loss", "mse_loss_backward", "nll_loss", "nll_loss_backward",
           "smooth_l1_loss", "smooth_l1_loss_backward"]
