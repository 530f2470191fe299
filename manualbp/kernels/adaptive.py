"""The adaptive optimizers' operations (Adam/AdamW, RMSprop, Adagrad), dispatched like every operation of
``kernels/__init__.py``: NumPy arrays to ``cpu/adaptive.py`` (or ``reference_adaptive.py`` under
``set_backend("numpy")``), device arrays to ``cuda/adaptive.py``.  Each is one pass over a parameter's
elements: every buffer is read and written once per step.

Derivation: derivations/12-adaptive-optimizers.md (D*).  A buffer an option does not use is None.
"""
from . import _impl


def adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, amsgrad,
                decoupled):
    """One torch.optim.Adam (AdamW when ``decoupled``) step on p, in place; step t counts from 1.  (D1)-(D8)"""
    return _impl("adam_update", p, g, exp_avg, exp_avg_sq, max_exp_avg_sq).adam_update(
        p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, amsgrad, decoupled)


def rmsprop_update(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
    """One torch.optim.RMSprop step on p, in place (grad_avg: centered only; momentum_buffer: momentum > 0).
    (D9)-(D12)"""
    return _impl("rmsprop_update", p, g, square_avg, grad_avg, momentum_buffer).rmsprop_update(
        p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered)


def adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay, eps, step):
    """One torch.optim.Adagrad step on p, in place; step t counts from 1.  (D13), (D14)"""
    return _impl("adagrad_update", p, g, state_sum).adagrad_update(p, g, state_sum, lr, lr_decay, weight_decay,
                                                                     eps, step)


__all__ = ["adagrad_update", "adam_update", "rmsprop_update"]
