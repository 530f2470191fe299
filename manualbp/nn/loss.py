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
import numpy as np

from .. import kernels
from .._checks import float_array, legacy_reduction, scalar_multiplier
from .._checks import reduction as check_reduction
from ..device import as_array
from .module import Module
from .saved import note_origin


class _Loss(Module):
    """Base class of the losses: ``loss_fn(input, target)`` then ``loss_fn.backward()``.

    Args:
        size_average, reduce: torch's deprecated pair, mapped onto ``reduction`` with torch's warning.
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

    # A loss has no parameters, so a second backward changes nothing: it may be asked again (with another
    # upstream gradient, say); its own check below still refuses a backward before any forward.
    _consumes_saved_state = False

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        reduction = legacy_reduction(size_average, reduce, reduction)  # torch's deprecated pair, with its warning
        self.reduction = check_reduction(reduction, type(self).__name__)
        self._loss_shape = None  # shape of the unreduced loss ell; grad must match it, eq. (R2)
        self._input_shape = None  # dL/d(input) is returned in this shape
        self._dtype = None  # the input's scalar type: every computation stays in it
        self._denom = None  # D of the 'mean' reduction, eq. (R1)

    # --- the two passes -----------------------------------------------------------------------
    def forward(self, input, target):
        who = type(self).__name__
        self._loss_shape = None  # a forward that raises leaves nothing stale for backward
        input, target = as_array(input, who), as_array(target, who, "target")  # a torch tensor, read in place
        x = float_array(input, who, "input")
        t = self._prepare(x, target)
        ell, denom = self._forward(x, t)  # the unreduced loss, and D of 'mean' (None: its size)
        self._dtype, self._input_shape, self._loss_shape = x.dtype.type, tuple(x.shape), tuple(ell.shape)
        self._like = x  # backward's grad must be on the input's device
        self._origin = input  # the array this loss is of: its backward's result is dL/d(it) (nn/saved.py)
        self._denom = ell.size if denom is None else denom
        return kernels.loss_reduce(ell, self.reduction, self._denom)  # (R1)

    def backward(self, grad=None):
        if self._loss_shape is None:
            raise ValueError(
                f"{type(self).__name__}.backward() called before forward(): call loss_fn(input, target) "
                f"first; backward uses what that call saved")
        s = kernels.loss_upstream(self._upstream(grad), self.reduction, self._denom)  # dL/d(ell), (R2)
        grad_x = self._backward(s)
        if isinstance(grad_x, np.generic):  # NumPy's 0-d result is a scalar: hand back an array
            grad_x = np.asarray(grad_x)
        grad_x = grad_x.reshape(self._input_shape)  # no cast: the math stays in the input's dtype
        note_origin(grad_x, self._origin)  # the model's backward checks it belongs to its last forward
        return grad_x

    # --- bookkeeping --------------------------------------------------------------------------
    def _upstream(self, grad):
        """The gradient arriving from above, checked: an array of the unreduced loss's shape for 'none'
        (on the input's device), else a scalar multiplier (default 1) in the input's dtype."""
        who, dt, shape = f"{type(self).__name__}.backward", self._dtype, self._loss_shape
        if self.reduction == "none":
            if grad is None:
                raise ValueError(
                    f"{who}: with reduction='none' the loss is an array, so backward needs grad = "
                    f"dL/d(loss) of shape {shape}")
            g = np.asarray(grad) if isinstance(grad, (np.generic, float)) else grad
            float_array(g, who, "grad", like=self._like)  # validation only: it would make 0-d 1-d
            if tuple(g.shape) != shape:
                raise ValueError(f"{who}: expected grad of shape {shape} (the unreduced loss's), "
                                 f"got {tuple(g.shape)}")
            return g.astype(dt, copy=False) if isinstance(g, np.ndarray) else g  # (R2)
        if grad is None:
            return dt(1)
        return scalar_multiplier(grad, who, self.reduction, dt, like=self._like)

    def _prepare(self, x, target):
        raise TypeError(f"{type(self).__name__} does not define _prepare()")

    def _forward(self, x, t):
        raise TypeError(f"{type(self).__name__} does not define _forward()")

    def _backward(self, s):
        raise TypeError(f"{type(self).__name__} does not define _backward()")


# --- validation helpers shared by the loss files ---------------------------------------------------

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
