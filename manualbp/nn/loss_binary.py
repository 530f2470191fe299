"""Binary cross-entropy: BCELoss (on probabilities) and BCEWithLogitsLoss (on logits).

Derivation: derivations/08-binary-cross-entropy.md

Shapes: input, target (*) the same; ``weight`` and ``pos_weight`` broadcast to (*) (torch's rule:
they may not enlarge it); the unreduced loss has shape (*).  'mean' divides by the number of
elements, whatever the weights (the reduction itself is in loss.py).

Labels cited here (derivations/08-binary-cross-entropy.md):
    (B1)  BCE: ell = -w [y max(log x, -100) + (1 - y) max(log(1 - x), -100)]
          (torch clamps each log at -100, so x = 0 or 1 gives a finite loss)
    (B2)  its slope, as torch computes it: d(ell)/dx = w (x - y) / max(x (1 - x), eps),
          eps = 1e-12 (a float32 constant); the clamp of (B1) is ignored
    (B3)  log-sigmoid without overflow: log s(z) = min(z, 0) - log(1 + exp(-|z|))
    (B4)  BCE on logits: ell = w [(1 - y) z - (1 + (p - 1) y) log s(z)], p = pos_weight
    (B5)  its slope: d(ell)/dz = w [(1 + (p - 1) y) s(z) - p y]; = w (s(z) - y) when p = 1
    (B6)  sigmoid without overflow: s(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0
"""
import numpy as np

from .. import kernels
from .._checks import host_values, same_shape_target
from .loss import _Loss, broadcast_weight, weight_array


def _check_unit_interval(a, who, name):
    a = host_values(a)  # the values are read on the host (a copy from the GPU)
    if not np.all((a >= 0) & (a <= 1)):  # nan fails too, as in torch
        bad = a[~((a >= 0) & (a <= 1))].flat[0]
        raise ValueError(f"{who}: all elements of {name} must lie in [0, 1] (they are probabilities); "
                         f"found {bad}")


def _full(w, x):
    """A weight broadcast to x's shape (a view on the CPU), on x's device; None stays None."""
    return None if w is None else kernels.like(x, np.broadcast_to(w, tuple(x.shape)))


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities x in [0, 1] against targets y in [0, 1]  (B1).

    Args:
        weight: optional array broadcastable to the input's shape, multiplying each element's loss.
        reduction: 'mean' | 'sum' | 'none'.

    Shape: input (*), target (*) the same; output scalar, or (*) for 'none'.

    Each log is clamped at -100, exactly as torch, so an input of exactly 0 or 1 gives a finite
    loss.  Backward uses torch's formula w (x - y) / max(x (1 - x), 1e-12)  (B2).  Prefer
    BCEWithLogitsLoss after a Sigmoid: it never takes the log of a rounded 0.
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight_array(weight, "BCELoss")

    def _prepare(self, x, target):
        who = "BCELoss"
        _check_unit_interval(x, who, "input")
        t = same_shape_target(x, target, who, finite=False)  # [0, 1] below refuses nan too
        _check_unit_interval(t, who, "target")
        self._w = _full(broadcast_weight(self.weight, x, who), x)
        return t

    def _forward(self, x, t):
        self._x, self._t = x, t  # both appear in (B2)
        return kernels.bce_loss(x, t, self._w), None  # (B1)

    def _backward(self, s):
        return kernels.bce_loss_backward(s, self._x, self._t, self._w)  # (B2), times dL/d(ell)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid followed by binary cross-entropy, in one numerically stable formula  (B4).

    Args:
        weight: optional array broadcastable to the input's shape, multiplying each element's loss.
        reduction: 'mean' | 'sum' | 'none'.
        pos_weight: optional array broadcastable to the input's shape (typically (C,) for the
            last dimension), weighting the positive term y log s(z): > 1 raises recall.

    Shape: input (*) logits, target (*) the same; output scalar, or (*) for 'none'.

    Never forms log(s(z)) from a rounded s(z): exact for logits like +-1000 (B3).
    Backward: w [(1 + (p - 1) y) s(z) - p y], i.e. s(z) - y without weights  (B5).
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight_array(weight, "BCEWithLogitsLoss")
        self.pos_weight = weight_array(pos_weight, "BCEWithLogitsLoss", "pos_weight")

    def _prepare(self, x, target):
        who = "BCEWithLogitsLoss"
        t = same_shape_target(x, target, who)
        self._w = _full(broadcast_weight(self.weight, x, who), x)
        self._pw = _full(broadcast_weight(self.pos_weight, x, who, "pos_weight"), x)
        return t

    def _forward(self, z, t):
        self._z, self._t = z, t  # both appear in (B5)
        return kernels.bce_with_logits_loss(z, t, self._w, self._pw), None  # (B3), (B4)

    def _backward(self, s):
        return kernels.bce_with_logits_loss_backward(s, self._z, self._t, self._w, self._pw)  # (B5), (B6)
