"""Regression losses: L1Loss, MSELoss, SmoothL1Loss, HuberLoss.

Derivation: derivations/07-regression-losses.md

Each loss is element-wise in the difference d = input - target, so its backward is the local
derivative d(ell)/d(input) times dL/d(ell) of the reduction (R2), element by element.
Shapes: input and target any shape, the same for both; the unreduced loss has that shape too.

Labels cited here (derivations/07-regression-losses.md):
    (R1)  the reduction: mean over all elements, sum, or none
    (R2)  dL/d(ell) of the reduction: g / D, g, or g_i
    (R3)  L1:        ell = |d|
    (R4)  its slope: d(ell)/d(input) = sign(d), with sign(0) = 0 (torch's choice at the kink)
    (R5)  MSE:       ell = d^2
    (R6)  its slope: d(ell)/d(input) = 2 d
    (R7)  SmoothL1:  ell = 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta  (beta = 0: L1)
    (R8)  its slope: d / beta where |d| < beta, else sign(d)
    (R9)  Huber:     ell = 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)
    (R10) its slope: d where |d| < delta, else delta sign(d)
"""
from .. import kernels
from .._checks import real_number, same_shape_target
from .loss import _Loss


class _Elementwise(_Loss):
    """Bookkeeping shared by the element-wise losses: target of the input's shape and dtype."""

    def _prepare(self, x, target):
        return same_shape_target(x, target, type(self).__name__)


class L1Loss(_Elementwise):
    """Mean absolute error: ell = |input - target|  (R3).

    Args:
        reduction: 'mean' | 'sum' | 'none'.

    Shape: input (*), target (*) the same; output scalar, or (*) for 'none'.

    Backward: d(ell)/d(input) = sign(input - target)  (R4); 0 where they are equal, as torch.
    """

    def _forward(self, x, t):
        self._x, self._t = x, t  # the sign of x - t is the slope, eq. (R4)
        return kernels.l1_loss(x, t), None  # (R3)

    def _backward(self, s):
        return kernels.l1_loss_backward(s, self._x, self._t)  # (R2) times (R4)


class MSELoss(_Elementwise):
    """Mean squared error: ell = (input - target)^2  (R5).

    Args:
        reduction: 'mean' | 'sum' | 'none'.

    Shape: input (*), target (*) the same; output scalar, or (*) for 'none'.

    Backward: d(ell)/d(input) = 2 (input - target)  (R6).
    """

    def _forward(self, x, t):
        self._x, self._t = x, t  # d = x - t, for (R6)
        return kernels.mse_loss(x, t), None  # (R5)

    def _backward(self, s):
        return kernels.mse_loss_backward(s, self._x, self._t)  # (R2) times (R6)


class SmoothL1Loss(_Elementwise):
    """Quadratic near zero, linear far from it:

        ell = 0.5 d^2 / beta   if |d| < beta
              |d| - 0.5 beta   otherwise                      (R7)

    with d = input - target.  ``beta = 0`` gives L1Loss exactly (torch's special case).

    Args:
        reduction: 'mean' | 'sum' | 'none'.
        beta: where the quadratic zone ends (>= 0, default 1.0).

    Shape: input (*), target (*) the same; output scalar, or (*) for 'none'.

    Backward: d / beta inside the zone, sign(d) outside (and at |d| = beta)  (R8).
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = real_number(beta, "SmoothL1Loss", "beta", low=0.0)

    def _forward(self, x, t):
        self._x, self._t = x, t  # d = x - t and its zone, for (R8)
        return kernels.smooth_l1_loss(x, t, self.beta), None  # (R7)

    def _backward(self, s):
        return kernels.smooth_l1_loss_backward(s, self._x, self._t, self.beta)  # (R2) times (R8)


class HuberLoss(_Elementwise):
    """Quadratic near zero, linear with slope delta far from it:

        ell = 0.5 d^2                  if |d| < delta
              delta (|d| - 0.5 delta)  otherwise               (R9)

    with d = input - target.  Equal to delta * SmoothL1Loss(beta=delta).

    Args:
        reduction: 'mean' | 'sum' | 'none'.
        delta: where the quadratic zone ends (> 0, default 1.0).

    Shape: input (*), target (*) the same; output scalar, or (*) for 'none'.

    Backward: d inside the zone, delta sign(d) outside (and at |d| = delta)  (R10).
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = real_number(delta, "HuberLoss", "delta", low=0.0, low_open=True)

    def _forward(self, x, t):
        self._x, self._t = x, t  # d = x - t and its zone, for (R10)
        return kernels.huber_loss(x, t, self.delta), None  # (R9)

    def _backward(self, s):
        return kernels.huber_loss_backward(s, self._x, self._t, self.delta)  # (R2) times (R10)
