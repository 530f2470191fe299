"""_Loss: what every loss shares (reduction, saved state, the upstream gradient).

Derivation: derivations/07-regression-losses.md (the reduction and its gradient, (R1)-(R2));
the per-loss formulas are in derivations/02-softmax-cross-entropy.md,
derivations/07-regression-losses.md and derivations/08-binary-cross-entropy.md.

A loss maps (input, target) to one number per element, ell_i, then reduces them:

    L = sum_i ell_i / D    ('mean'; D is the number of elements unless a loss says otherwise)
    L = sum_i ell_i        ('sum')
    L = ell                ('none': the unreduced array)

and ``backward(grad)`` returns dL/d(input) = dL/d(ell) * d(ell)/d(input).  The first factor is the
same for every loss, so it lives here; each subclass supplies the second.

Labels cited here (derivations/07-regression-losses.md):
    (R1)  the reduction: L = sum_i ell_i / D ('mean'), sum_i ell_i ('sum'), ell ('none')
    (R2)  its gradient:  dL/d(ell_i) = g / D ('mean'), g ('sum'), g_i ('none'), where g is the
          gradient arriving from above (1 when the loss is the end of the graph)
"""
import numbers

import numpy as np

from .._checks import describe, finite_array, float_array
from .._checks import reduction as check_reduction
from ..device import is_cuda_array, mixed_message, unsupported
from .module import Module


class _Loss(Module):
    """Base class of the losses: ``loss_fn(input, target)`` then ``loss_fn.backward()``.

    Args:
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'``, as in torch.

    Returns from ``forward``: a NumPy scalar of the input's dtype (``np.float32``/``np.float64``)
    for ``'mean'``/``'sum'`` (``float(loss)`` and ``loss.item()`` work), or an array of the
    unreduced loss's shape for ``'none'``.

    ``backward(grad=None)`` returns dL/d(input), an array shaped like the input.  For ``'none'``
    ``grad`` is required: dL/d(loss), shaped like the unreduced loss.  For ``'mean'``/``'sum'``
    it may be a scalar multiplier (default 1), as ``loss.backward(gradient)`` in torch.

    Subclasses implement three methods and keep bookkeeping apart from math:
        ``_prepare(x, target) -> target``  validation and dtype only;
        ``_forward(x, t) -> (ell, D)``     the per-element loss and the 'mean' denominator
                                            (``None``: the number of elements), saving what
                                            ``_backward`` needs;
        ``_backward(s) -> grad_x``          s = dL/d(ell) of (R2), a scalar or an array of ell's shape.
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = check_reduction(reduction, type(self).__name__)
        self._loss_shape = None  # shape of the unreduced loss ell; grad must match it, eq. (R2)
        self._input_shape = None  # dL/d(input) is returned in this shape
        self._dtype = None  # the input's scalar type: every computation stays in it
        self._denom = None  # D of the 'mean' reduction, eq. (R1)

    # --- the two passes -----------------------------------------------------------------------
    def __call__(self, input, target):
        return self.forward(input, target)

    def forward(self, input, target):
        if self._uses_cuda(input):  # the input is on the GPU: the fused CUDA kernels (_forward_cuda)
            return self._forward_cuda(input, target)
        who = type(self).__name__
        self._loss_shape = None  # a forward that raises leaves nothing stale for backward
        x = float_array(input, who, "input")
        x = x.reshape(input.shape)  # float_array makes a 0-d array 1-d; a 0-d input keeps its shape
        t = self._prepare(x, target)
        ell, denom = self._forward(x, t)
        ell = np.asarray(ell)  # NumPy returns a 0-d result as a scalar; 'none' promises an array
        dt = x.dtype.type
        self._dtype, self._input_shape, self._loss_shape = dt, x.shape, ell.shape
        self._denom = dt(ell.size if denom is None else denom)
        if self.reduction == "none":
            return ell  # (R1)
        total = ell.sum(dtype=x.dtype)
        if self.reduction == "sum":
            return dt(total)  # (R1)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 is nan, as in torch
            return dt(total / self._denom)  # (R1)

    def backward(self, grad=None):
        if self._backward_uses_cuda(grad):
            return self._backward_cuda(grad)
        if self._loss_shape is None:
            raise ValueError(
                f"{type(self).__name__}.backward() called before forward(): call loss_fn(input, target) "
                f"first; backward uses what that call saved")
        s = self._upstream(grad)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            grad_x = self._backward(s)
        return np.asarray(grad_x).reshape(self._input_shape)  # no cast: the math stays in the input's dtype

    # --- bookkeeping --------------------------------------------------------------------------
    def _upstream(self, grad):
        """dL/d(ell) of (R2), in the input's dtype: an array for 'none', else a scalar."""
        who, dt, shape = f"{type(self).__name__}.backward", self._dtype, self._loss_shape
        if self.reduction == "none":
            if grad is None:
                raise ValueError(
                    f"{who}: with reduction='none' the loss is an array, so backward needs grad = "
                    f"dL/d(loss) of shape {shape}")
            g = np.asarray(grad) if isinstance(grad, (np.generic, float)) else grad
            float_array(g, who, "grad")  # validation only: it would make a 0-d grad 1-d
            if g.shape != shape:
                raise ValueError(f"{who}: expected grad of shape {shape} (the unreduced loss's), "
                                 f"got {tuple(g.shape)}")
            return g.astype(dt, copy=False)  # (R2)
        if grad is None:
            g = dt(1)
        else:
            if isinstance(grad, np.ndarray) and grad.shape == ():
                grad = grad[()]
            if isinstance(grad, (bool, np.bool_)) or not isinstance(grad, numbers.Real):
                raise TypeError(f"{who}: with reduction={self.reduction!r} grad is a scalar multiplier "
                                f"of the loss, got {describe(grad)}")
            g = dt(grad)
        if self.reduction == "sum":
            return g  # (R2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / self._denom  # (R2)

    def _prepare(self, x, target):
        raise TypeError(f"{type(self).__name__} does not define _prepare()")

    def _forward(self, x, t):
        raise TypeError(f"{type(self).__name__} does not define _forward()")

    def _backward(self, s):
        raise TypeError(f"{type(self).__name__} does not define _backward()")

    # --- on the GPU (the input is a numba.cuda device array; see manualbp/device.py) -------------------
    # CrossEntropyLoss and MSELoss override the two methods below with their fused kernels
    # (manualbp/kernels/cuda_loss.py).  The loss then stays on the GPU: a float32 device array of shape
    # (1,) for 'mean'/'sum' (read it with manualbp.to_numpy(loss)[0]), of the unreduced shape for 'none'.
    _cuda_saved = None  # what the GPU backward needs, saved by _forward_cuda

    def _forward_cuda(self, input, target):
        raise unsupported(type(self).__name__, "only CrossEntropyLoss and MSELoss have GPU kernels")

    def _backward_cuda(self, grad):
        raise unsupported(f"{type(self).__name__}.backward")

    def _cuda_target(self, target, input):
        """The target must be on the GPU with the input (Network.fit moves both)."""
        if not is_cuda_array(target):
            raise TypeError(mixed_message(type(self).__name__, "the target", target, True))
        return target

    def _cuda_upstream(self, grad):
        """dL/d(loss) for the GPU kernels: 1.0 by default, a number, or a device array ('none': required)."""
        who = f"{type(self).__name__}.backward"
        if grad is None and self.reduction == "none":
            raise ValueError(f"{who}: with reduction='none' the loss is an array, so backward needs grad = "
                             f"dL/d(loss) of shape {self._loss_shape}, on the GPU")
        if grad is None:
            return 1.0
        if is_cuda_array(grad):
            if self.reduction == "none" and tuple(grad.shape) != self._loss_shape:
                raise ValueError(f"{who}: expected grad of shape {self._loss_shape}, got {tuple(grad.shape)}")
            return grad
        if isinstance(grad, np.ndarray) and grad.shape == ():
            grad = grad[()]
        if self.reduction != "none" and isinstance(grad, numbers.Real) and not isinstance(grad, (bool, np.bool_)):
            return float(grad)
        raise TypeError(f"{who}: with reduction={self.reduction!r} on the GPU grad is "
                        f"{'a device array' if self.reduction == 'none' else 'a number or a device array'}, "
                        f"got {describe(grad)}")


# --- validation helpers shared by the loss files ---------------------------------------------------

def same_shape_target(x, target, who, finite=True):
    """A real-valued target with exactly the input's shape, cast to the input's dtype.

    torch would broadcast a differently shaped target for the regression losses (with a warning
    that the result is probably wrong); here that is an error.
    """
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{who}: expected target to be a numpy array, got {describe(target)}")
    if target.dtype.kind not in "fiub":
        raise TypeError(f"{who}: expected a real-valued target, got dtype {target.dtype}")
    if target.shape != x.shape:
        raise ValueError(f"{who}: expected target of shape {tuple(x.shape)} (the input's), "
                         f"got {tuple(target.shape)}")
    if finite:
        finite_array(target, who, "target")  # a nan target would make every later loss nan
    return np.asarray(target, dtype=x.dtype, order="C")  # (ascontiguousarray would make 0-d 1-d)


def weight_array(weight, who, name="weight", ndim=None):
    """``None``, or a copy of a real-valued array (kept in float64; cast to the input dtype per call)."""
    if weight is None:
        return None
    w = np.array(weight, copy=True)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{who}: expected {name} to be a real-valued array, got dtype {w.dtype}")
    if ndim is not None and w.ndim != ndim:
        raise ValueError(f"{who}: expected {name} with {ndim} dimension(s), got shape {tuple(w.shape)}")
    return w.astype(np.float64) if w.dtype.kind != "f" else w


def broadcast_weight(w, x, who, name="weight"):
    """``w`` cast to ``x``'s dtype, after checking it broadcasts to ``x.shape`` without enlarging it."""
    if w is None:
        return None
    try:
        ok = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{who}: {name} of shape {tuple(w.shape)} does not broadcast to the input's "
                         f"shape {tuple(x.shape)}")
    return w.astype(x.dtype, copy=False)
