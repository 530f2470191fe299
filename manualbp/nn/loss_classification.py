"""Classification losses: NLLLoss (on log-probabilities) and CrossEntropyLoss (on logits).

Derivation: derivations/02-softmax-cross-entropy.md

Shapes (C classes; dimension 1 holds the classes, as in torch):
    input  (N, C), (N, C, d1, d2, ...), or unbatched (C,)
    target class indices: integers of shape (N,), (N, d1, d2, ...), or () for unbatched input;
           a value equal to ``ignore_index`` contributes nothing and is not counted;
           or, for CrossEntropyLoss only, class probabilities: floats of the input's shape
    weight optional (C,): a weight per class
    loss   'none': (N,), (N, d1, ...), or () unbatched; 'mean'/'sum': a scalar

CrossEntropyLoss.backward does not build the softmax Jacobian: composing (S2) with the loss
collapses to dL/dz = softmax(z) - y per sample (S7), scaled by weights and the reduction.

Labels cited here (derivations/02-softmax-cross-entropy.md):
    (S1)  softmax with the max subtracted: p_c = exp(z_c - m) / sum_k exp(z_k - m), m = max_k z_k
    (S2)  log-softmax by log-sum-exp: log p_c = (z_c - m) - log sum_k exp(z_k - m)
    (S3)  NLL of one sample: ell = -w_y x_y (x: log-probabilities, y: its class); 0 if ignored
    (S4)  its gradient: d(ell)/dx_c = -w_y [c = y]
    (S5)  cross-entropy with a class index and label smoothing eps:
          ell = (1 - eps) (-w_y log p_y) + (eps / C) (-sum_c w_c log p_c)
    (S6)  cross-entropy with class probabilities y: ell = -sum_c w_c y~_c log p_c,
          y~ = (1 - eps) y + eps / C
    (S7)  the fused gradient: both are ell = -sum_c q_c log p_c with q_c = w_c y~_c
          (y~ = (1 - eps) onehot(y) + eps / C for an index), and d(ell)/dz = (sum_c q_c) p - q,
          which is p - y when there are no weights and y sums to 1
    (S8)  'mean' divides by D = sum of w_y over the non-ignored samples (class indices; their
          count without weights), or by the number of samples (probabilities); dL/d(ell) = g / D
"""
import numbers

import numpy as np

from .. import kernels
from .._checks import describe, finite_array, float_array, host_values, is_array, real_number, same_device
from ..device import as_array
from .loss import _Loss, weight_array

# --- bookkeeping shared by both losses ----------------------------------------------------------

def _batched(x, who):
    """The input with a batch dimension: (C,) becomes (1, C); at least one class is required."""
    if x.ndim == 0 or x.shape[1 if x.ndim > 1 else 0] == 0:
        raise ValueError(f"{who}: expected input of shape (C,), (N, C) or (N, C, d1, ...) with C >= 1, "
                         f"got {tuple(x.shape)}")
    return x.reshape((1,) + tuple(x.shape)) if x.ndim == 1 else x


def _three_d(x):
    """(N, C, d1, ...) or (C,) viewed as (N, C, S), S = d1*d2*... (1 for (N, C)): what the kernels take."""
    xb = _batched(x, "loss")
    return xb.reshape(xb.shape[0], xb.shape[1], xb.size // (xb.shape[0] * xb.shape[1]) if xb.size else 1)


def _class_indices(x, target, ignore_index, who):
    """Validate class-index targets for input ``x``; return them as int64 (N, S), on x's device.

    A value equal to ``ignore_index`` is kept: the kernels leave those samples out.  The range check
    reads the values on the host (for a target on the GPU, a copy of N*S integers).
    """
    if isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        target = np.asarray(target)
    if not is_array(target):
        raise TypeError(f"{who}: expected target to be a numpy array of class indices, got {describe(target)}")
    same_device(target, x, who, "the target")
    unbatched = x.ndim == 1
    expected = () if unbatched else tuple(x.shape[:1]) + tuple(x.shape[2:])
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{who}: expected class-index target of an integer dtype with shape {expected}"
            + (f", or class probabilities of a float dtype with shape {tuple(x.shape)}"
               if who == "CrossEntropyLoss" else "")
            + f"; got {describe(target)}")
    if tuple(target.shape) != expected:
        raise ValueError(f"{who}: for input of shape {tuple(x.shape)} expected target of shape {expected}, "
                         f"got {tuple(target.shape)}")
    n_classes = x.shape[0 if unbatched else 1]
    values = host_values(target).astype(np.int64)
    bad = (values != ignore_index) & ((values < 0) | (values >= n_classes))
    if bad.any():
        raise ValueError(f"{who}: target value {values[bad].flat[0]} is out of range for C={n_classes} classes "
                         f"(class indices lie in [0, {n_classes - 1}], or equal ignore_index={ignore_index})")
    n = 1 if unbatched else x.shape[0]
    if isinstance(target, np.ndarray):
        return values.reshape(n, -1)
    if target.dtype != np.int64:
        raise TypeError(f"{who}: expected class indices of dtype int64 on the GPU, got {target.dtype}")
    return target.reshape(n, target.size // n)


def _class_weight(weight, x, who):
    """The (C,) weight in the input's dtype, on the input's device (None: no weights)."""
    if weight is None:
        return None
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    if weight.shape != (n_classes,):
        raise ValueError(f"{who}: weight must have one entry per class, shape ({n_classes},), "
                         f"got {tuple(weight.shape)}")
    return kernels.like(x, weight.astype(x.dtype))


def _check_ignore_index(value, who):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: expected ignore_index to be an int, got {type(value).__name__}")
    return int(value)


class _ClassLoss(_Loss):
    """Bookkeeping common to NLLLoss and CrossEntropyLoss: weight, ignore_index, the loss's shape."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        who = type(self).__name__
        self.weight = weight_array(weight, who, ndim=1)
        self.ignore_index = _check_ignore_index(ignore_index, who)
        self._unbatched = None  # was the input (C,)? the loss then has shape ()
        self._wc = None  # the class weight (C,) in the input's dtype, on its device
        self._t = None  # the target classes (N, S), for (S4)/(S7)

    def _unbatch(self, ell):
        """ell (N, S) as torch shapes it: () for an unbatched (C,) input, else the target's shape."""
        return ell.reshape(()) if self._unbatched else ell.reshape(self._loss_out_shape)

    def _prepare(self, x, target):
        who = type(self).__name__
        _batched(x, who)
        self._unbatched = x.ndim == 1
        self._loss_out_shape = tuple(x.shape[:1]) + tuple(x.shape[2:]) if x.ndim > 1 else ()
        self._wc = _class_weight(self.weight, x, who)
        return _class_indices(x, target, self.ignore_index, who)


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of the target class: ell = -weight[y] * input[y]  (S3).

    The input holds log-probabilities (a LogSoftmax output); CrossEntropyLoss does both steps.

    Args:
        weight: optional (C,) array, a weight per class.
        ignore_index: a target value that contributes nothing and is not counted (default -100).
        reduction: 'mean' | 'sum' | 'none'; 'mean' divides by the summed weights of the
            non-ignored targets (S8), so an all-ignored batch gives nan, as in torch.

    Shape: input (N, C), (N, C, d1, ...) or (C,); target (N,), (N, d1, ...) or () of integers;
    output scalar, or the target's shape for 'none'.

    Backward: -weight[y] * dL/d(ell) at the target class, 0 elsewhere  (S4).
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)

    def _forward(self, x, t):
        x3 = _three_d(x)
        self._t, self._x3_shape = t, tuple(x3.shape)  # where the gradient goes, (S4)
        ell, denom = kernels.nll_loss(x3, t, self._wc, self.ignore_index)  # (S3); D of (S8)
        return self._unbatch(ell), denom

    def _backward(self, s):
        s = s if self.reduction != "none" else s.reshape(tuple(self._t.shape))  # dL/d(ell) per sample, (S8)
        return kernels.nll_loss_backward(s, self._x3_shape, self._t, self._wc, self.ignore_index,
                                         self._dtype)  # (S4)


class CrossEntropyLoss(_ClassLoss):
    """Softmax and negative log-likelihood in one step, on raw scores (logits) z:

        ell = -weight[y] * log softmax(z)[y]                    (class index y, (S3) after (S2))
        ell = -sum_c weight[c] y_c log softmax(z)_c             (class probabilities y, (S6))

    Args:
        weight: optional (C,) array, a weight per class.
        ignore_index: a target value that contributes nothing and is not counted (default -100);
            only for class-index targets.
        reduction: 'mean' | 'sum' | 'none'.  'mean' divides by the summed weights of the
            non-ignored targets for class indices, but by the number of samples for
            probabilities (S8), as torch does.
        label_smoothing: eps in [0, 1]: the target becomes (1 - eps) y + eps / C  (S5, S6).

    Shape: input (N, C), (N, C, d1, ...) or (C,); target integers (N,), (N, d1, ...) or (), or
    floats of the input's shape; output scalar, or (N,), (N, d1, ...) or () for 'none'.

    Backward: (sum_c q_c) softmax(z) - q with q = weight * smoothed target  (S7): softmax(z) - y
    in the plain case.  No softmax Jacobian is formed.
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        self.label_smoothing = real_number(label_smoothing, "CrossEntropyLoss", "label_smoothing",
                                           low=0.0, high=1.0)
        self._probs = None  # is the target class probabilities (a float array of the input's shape)?
        self._p = None  # softmax(z), for (S7)
        self._fused_grad = None  # p - onehot(y) of (S7) from the fused kernel (see forward), else None

    def forward(self, input, target):
        # The common case of a training step -- (N, C) logits, class indices, no weights, no smoothing,
        # 'mean' or 'sum' -- runs (S1)-(S3) and (S7) in one compiled loop (kernels.cross_entropy_index),
        # which at batch 1 is several times faster than the general path below.  Anything else, and any
        # input the kernel finds wrong, takes the general path, which also raises the errors.
        self._fused_grad = None
        input, target = as_array(input, "CrossEntropyLoss"), as_array(target, "CrossEntropyLoss", "target")
        self._origin = input
        if (self.weight is None and self.label_smoothing == 0 and self.reduction != "none"
                and getattr(input, "ndim", 0) == 2 and getattr(input, "size", 0) > 0
                and getattr(input, "dtype", None) in (np.float32, np.float64)
                and getattr(target, "dtype", np.dtype(object)).kind in "iu"
                and tuple(getattr(target, "shape", ())) == tuple(input.shape[:1])):
            same_device(target, input, "CrossEntropyLoss", "the target")
            loss = self._forward_fused(input, target)
            if loss is not None:
                return loss
        return super().forward(input, target)

    def _forward_fused(self, x, target):
        """The loss of (S3) reduced by (S8), with dL/dz of each sample saved for backward; or None."""
        x = float_array(x, "CrossEntropyLoss")  # one memory layout for the kernel
        mean = self.reduction == "mean"
        loss, count, bad, grad = kernels.cross_entropy_index(x, target, self.ignore_index, mean)  # (S8) too
        if bad >= 0 or count == 0:  # a target out of range, or nothing counted: the general path decides
            return None
        self._fused_grad = grad  # p - onehot(y) per sample, (S7); zero rows for ignored samples
        self._unbatched, self._probs = False, False
        self._dtype, self._input_shape, self._loss_shape = x.dtype.type, tuple(x.shape), ()
        self._like = x
        self._denom = count  # D of (S8): the number of counted samples
        return loss

    def _prepare(self, x, target):
        who = "CrossEntropyLoss"
        self._probs = getattr(target, "dtype", np.dtype(object)).kind == "f"
        if not self._probs:
            return super()._prepare(x, target)
        _batched(x, who)
        self._unbatched = x.ndim == 1
        self._loss_out_shape = tuple(x.shape[:1]) + tuple(x.shape[2:]) if x.ndim > 1 else ()
        self._wc = _class_weight(self.weight, x, who)
        same_device(target, x, who, "the target")
        if tuple(target.shape) != tuple(x.shape):
            raise ValueError(f"{who}: a float target holds class probabilities and must have the input's "
                             f"shape {tuple(x.shape)}, got {tuple(target.shape)} (class indices need an "
                             f"integer dtype)")
        if self.ignore_index != -100:
            raise ValueError(f"{who}: ignore_index={self.ignore_index} is not supported with class-probability "
                             f"targets (as in torch)")
        values = finite_array(host_values(target), who, "the class-probability target")
        if (values < 0).any():
            raise ValueError(f"{who}: class probabilities must be >= 0, found {values[values < 0].flat[0]} "
                             f"(torch does not require each row to sum to 1, and neither does this loss)")
        if isinstance(target, np.ndarray):
            return np.asarray(target, dtype=x.dtype, order="C")
        return float_array(target, who, "target")

    def _forward(self, z, t):
        z3 = _three_d(z)
        if self._probs:
            y3 = t.reshape(tuple(z3.shape))
            ell, self._p = kernels.cross_entropy_probs(z3, y3, self._wc, self.label_smoothing)  # (S6)
            self._t = y3
            return self._unbatch(ell), None  # D of (S8): the number of samples
        ell, denom, self._p = kernels.cross_entropy(z3, t, self._wc, self.ignore_index,
                                                    self.label_smoothing)  # (S1)-(S3), (S5); p for (S7)
        self._t = t
        return self._unbatch(ell), denom  # D of (S8): the summed weights of the counted samples

    def _backward(self, s):
        if self._fused_grad is not None:  # from the fused kernel: s (p - onehot(y)), (S7) and (S8)
            return kernels.scale(self._fused_grad, s)
        if self.reduction == "none":
            s = s.reshape(tuple(self._p.shape[:1]) + tuple(self._p.shape[2:]))  # dL/d(ell) per sample
        if self._probs:
            return kernels.cross_entropy_probs_backward(s, self._p, self._t, self._wc, self.label_smoothing)
        return kernels.cross_entropy_backward(s, self._p, self._t, self._wc, self.ignore_index,
                                              self.label_smoothing)  # (S7)
