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
from .._checks import describe, finite_array, real_number
from ..device import float32_input, unsupported
from ..device import kernels as cuda_kernels
from .loss import _Loss, weight_array

# --- bookkeeping shared by both losses ----------------------------------------------------------

def _batched(x, who):
    """The input with a batch dimension: (C,) becomes (1, C); at least one class is required."""
    if x.ndim == 0 or x.shape[1 if x.ndim > 1 else 0] == 0:
        raise ValueError(f"{who}: expected input of shape (C,), (N, C) or (N, C, d1, ...) with C >= 1, "
                         f"got {tuple(x.shape)}")
    return x[None] if x.ndim == 1 else x


def _class_indices(x, target, ignore_index, who):
    """Validate class-index targets for input ``x``; return (t, valid) batched, t safe to index with.

    ``valid`` marks the samples that count (target != ignore_index); ignored ones get class 0 in
    ``t`` so that gathers stay in bounds, and are masked out afterwards.
    """
    if isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        target = np.asarray(target)
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{who}: expected target to be a numpy array of class indices, got {describe(target)}")
    unbatched = x.ndim == 1
    expected = () if unbatched else x.shape[:1] + x.shape[2:]
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{who}: expected class-index target of an integer dtype with shape {expected}"
            + (f", or class probabilities of a float dtype with shape {tuple(x.shape)}"
               if who == "CrossEntropyLoss" else "")
            + f"; got {describe(target)}")
    if target.shape != expected:
        raise ValueError(f"{who}: for input of shape {tuple(x.shape)} expected target of shape {expected}, "
                         f"got {tuple(target.shape)}")
    n_classes = x.shape[0 if unbatched else 1]
    t = target.astype(np.int64).reshape((1,) if unbatched else expected)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= n_classes))
    if bad.any():
        raise ValueError(f"{who}: target value {t[bad].flat[0]} is out of range for C={n_classes} classes "
                         f"(class indices lie in [0, {n_classes - 1}], or equal ignore_index={ignore_index})")
    return np.where(valid, t, 0), valid


def _class_weight(weight, x, who):
    """The (C,) weight in the input's dtype, shaped (1, C, 1, ...) to broadcast over a batched input."""
    if weight is None:
        return None
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    if weight.shape != (n_classes,):
        raise ValueError(f"{who}: weight must have one entry per class, shape ({n_classes},), "
                         f"got {tuple(weight.shape)}")
    nd = max(x.ndim, 2)
    return weight.astype(x.dtype).reshape((1, n_classes) + (1,) * (nd - 2))


def _check_ignore_index(value, who):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: expected ignore_index to be an int, got {type(value).__name__}")
    return int(value)


class _ClassLoss(_Loss):
    """Bookkeeping common to NLLLoss and CrossEntropyLoss: weight, ignore_index, the loss's shape."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        who = type(self).__name__
        self.weight = weight_array(weight, who, ndim=1)
        self.ignore_index = _check_ignore_index(ignore_index, who)
        self._unbatched = None  # was the input (C,)? the loss then has shape ()
        self._wc = None  # the class weight shaped (1, C, 1, ...), in the input's dtype
        self._t_idx = self._valid = self._w_y = None  # target class, counted?, its weight: (S4)/(S7)

    def _unbatch(self, ell):
        """ell as torch shapes it: () for an unbatched (C,) input."""
        return ell.reshape(()) if self._unbatched else ell

    def _save_targets(self, t, dtype):
        """Save the target classes, the counted mask and each sample's class weight w_y (0 if ignored)."""
        t_idx, valid = t
        if self._wc is None:
            w_y = valid.astype(dtype)
        else:
            w_y = np.where(valid, self.weight.astype(dtype)[t_idx], dtype.type(0))
        self._t_idx, self._valid, self._w_y = t_idx, valid, w_y
        return t_idx, valid, w_y


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

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, ignore_index, reduction)

    def _prepare(self, x, target):
        who = "NLLLoss"
        _batched(x, who)
        self._unbatched = x.ndim == 1
        self._wc = _class_weight(self.weight, x, who)
        return _class_indices(x, target, self.ignore_index, who)

    def _forward(self, x, t):
        xb = _batched(x, "NLLLoss")
        t_idx, valid, w_y = self._save_targets(t, x.dtype)  # where and how much, for (S4)
        self._xb_shape = xb.shape
        x_y = np.take_along_axis(xb, t_idx[:, None], axis=1)[:, 0]  # the target's log-probability
        ell = np.where(valid, -w_y * x_y, x.dtype.type(0))  # (S3)
        return self._unbatch(ell), w_y.sum(dtype=x.dtype)  # denominator of (S8)

    def _backward(self, s):
        s = np.broadcast_to(s, self._w_y.shape)  # dL/d(ell) per sample, (S8)
        grad = np.zeros(self._xb_shape, dtype=self._dtype)
        g_y = np.where(self._valid, -s * self._w_y, self._dtype(0))  # (S4); ignored samples get 0
        np.put_along_axis(grad, self._t_idx[:, None], g_y[:, None], axis=1)
        return grad


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

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = real_number(label_smoothing, "CrossEntropyLoss", "label_smoothing",
                                           low=0.0, high=1.0)
        self._probs = None  # is the target class probabilities (a float array of the input's shape)?
        self._p = None  # softmax(z), for (S7)
        self._q = None  # the weighted, smoothed probability target q of (S7)
        self._zero_denominator = None  # 'mean' with D = 0 of (S8): torch's nan gradient
        self._fused_grad = None  # p - onehot(y) of (S7) from the fused kernel (see forward), else None

    def forward(self, input, target):
        # The common case of a training step -- (N, C) logits, class indices, no weights, no smoothing,
        # 'mean' or 'sum' -- runs (S1)-(S3) and (S7) in one compiled loop (kernels.cross_entropy_index),
        # which at batch 1 is several times faster than the dozen NumPy calls of the general path below.
        # Anything else, and any input the kernel finds wrong, takes the general path, which also
        # raises the errors.
        self._fused_grad = None
        if (self.weight is None and self.label_smoothing == 0 and self.reduction != "none"
                and type(input) is np.ndarray and input.ndim == 2 and input.size > 0
                and input.dtype in (np.float32, np.float64) and type(target) is np.ndarray
                and target.dtype.kind in "iu" and target.shape == input.shape[:1]):
            loss = self._forward_fused(input, target)
            if loss is not None:
                return loss
        return super().forward(input, target)

    def _forward_fused(self, x, target):
        """The loss of (S3) reduced by (S8), with dL/dz of each sample saved for backward; or None."""
        if not (x.flags.c_contiguous and x.flags.writeable):
            x = np.array(x, order="C")  # one memory layout for the kernel, as float_array gives the others
        total, count, bad, grad = kernels.cross_entropy_index(x, target, self.ignore_index)
        if bad >= 0 or count == 0:  # a target out of range, or nothing counted: the general path decides
            return None
        object.__setattr__(self, "_ran_on_cuda", False)  # what _uses_cuda records in the general path
        dt = x.dtype.type
        total = dt(total)  # the kernel summed in x's dtype; Numba hands the scalar back as a Python float
        self._fused_grad = grad
        self._valid = None if count == len(target) else target != self.ignore_index
        self._unbatched, self._probs = False, False
        self._dtype, self._input_shape, self._loss_shape = dt, x.shape, ()
        self._denom = dt(count)  # D of (S8): the number of counted samples
        return total if self.reduction == "sum" else dt(total / self._denom)  # the reduction of (S8)

    def _prepare(self, x, target):
        who = "CrossEntropyLoss"
        _batched(x, who)
        self._unbatched = x.ndim == 1
        self._wc = _class_weight(self.weight, x, who)
        self._probs = isinstance(target, np.ndarray) and target.dtype.kind == "f"
        if not self._probs:
            return _class_indices(x, target, self.ignore_index, who)
        if target.shape != x.shape:
            raise ValueError(f"{who}: a float target holds class probabilities and must have the input's "
                             f"shape {tuple(x.shape)}, got {tuple(target.shape)} (class indices need an "
                             f"integer dtype)")
        if self.ignore_index != -100:
            raise ValueError(f"{who}: ignore_index={self.ignore_index} is not supported with class-probability "
                             f"targets (as in torch)")
        finite_array(target, who, "the class-probability target")
        if (target < 0).any():
            raise ValueError(f"{who}: class probabilities must be >= 0, found {target[target < 0].flat[0]} "
                             f"(torch does not require each row to sum to 1, and neither does this loss)")
        return np.asarray(target, dtype=x.dtype, order="C")

    def _forward(self, x, t):
        eps, dt = self.label_smoothing, x.dtype.type
        xb = _batched(x, "CrossEntropyLoss")
        n_classes = xb.shape[1]
        shifted = xb - xb.max(axis=1, keepdims=True)  # z - m: every exp(.) <= 1, (S1)
        e = np.exp(shifted)
        sum_e = e.sum(axis=1, keepdims=True)
        self._p = e / sum_e  # (S1), kept for (S7)
        log_p = shifted - np.log(sum_e)  # (S2)
        if self._probs:
            y = t.reshape(xb.shape)
            y_smooth = y if eps == 0 else y * dt(1 - eps) + dt(eps / n_classes)  # y~ of (S6)
            self._q = y_smooth if self._wc is None else y_smooth * self._wc  # q of (S7)
            ell = -(log_p * self._q).sum(axis=1)  # (S6)
            return self._unbatch(ell), ell.size  # denominator of (S8): the number of samples
        t_idx, valid, w_y = self._save_targets(t, x.dtype)  # q of (S7) is built from them in backward
        ell = -w_y * np.take_along_axis(log_p, t_idx[:, None], axis=1)[:, 0]  # (S3) on (S2)
        if eps > 0:
            w_log_p = log_p if self._wc is None else log_p * self._wc
            ell = dt(1 - eps) * ell + dt(eps / n_classes) * -w_log_p.sum(axis=1)  # (S5)
        ell = np.where(valid, ell, dt(0))  # ignored samples contribute nothing
        denom = w_y.sum(dtype=x.dtype)  # denominator of (S8)
        self._zero_denominator = denom == 0
        # torch divides the two terms of (S5) by D separately: with D = 0 its 'mean' is 0/0 + c/0 = nan
        return self._unbatch(ell), (dt(np.nan) if self._zero_denominator else denom)

    def _backward(self, s):
        if self._fused_grad is not None:  # from the fused kernel: s (p - onehot(y)), (S7) and (S8)
            grad = s * self._fused_grad
            return grad if self._valid is None else np.where(self._valid[:, None], grad, self._dtype(0))
        p, dt = self._p, self._dtype
        s = np.expand_dims(np.broadcast_to(s, p.shape[:1] + p.shape[2:]), 1)  # dL/d(ell) per sample, (S8)
        if self._probs:
            q = self._q
        else:
            eps, n_classes = self.label_smoothing, p.shape[1]
            q = np.zeros_like(p)
            np.put_along_axis(q, self._t_idx[:, None], dt(1 - eps), axis=1)
            q += dt(eps / n_classes)  # (1 - eps) onehot(y) + eps / C, y~ of (S7)
            if self._wc is not None:
                q *= self._wc  # q = w y~ of (S7)
        grad = s * (q.sum(axis=1, keepdims=True) * p - q)  # (S7)
        if self._probs:
            return grad
        valid = self._valid[:, None]
        if self.reduction == "mean" and self._zero_denominator:
            # torch's 0/0: every counted sample's gradient is nan, ignored ones stay 0
            return np.where(valid, grad * dt(np.nan), dt(0))
        return np.where(valid, grad, dt(0))

    # --- on the GPU: softmax, (S2)-(S3) and (S7)-(S8) fused in kernels/cuda_loss.py ----------------------
    def _forward_cuda(self, input, target):
        who = "CrossEntropyLoss"
        self._cuda_saved = None
        if self.weight is not None:
            raise unsupported(f"{who}(weight=...)", "the fused kernel has no class weights")
        if self.label_smoothing > 0:
            raise unsupported(f"{who}(label_smoothing={self.label_smoothing})", "the fused kernel has no smoothing")
        x = float32_input(input, who)
        if x.ndim != 2:
            raise unsupported(f"{who} on input of shape {tuple(x.shape)}", "the kernel takes (N, C) logits")
        t = self._cuda_target(target, input)
        if t.dtype.kind == "f":
            raise unsupported(f"{who} with class-probability (float) targets", "give int64 class indices")
        # A kernel cannot raise, and a class outside [0, C) would index past the row of logits. So the N
        # labels come back to the host (a few hundred bytes) and go through the CPU path's check first.
        # (np.broadcast_to gives an array of the logits' shape that takes no memory: only its shape is read.)
        _class_indices(np.broadcast_to(np.float32(0), tuple(x.shape)), t.copy_to_host(), self.ignore_index, who)
        loss, probs, denom = cuda_kernels().cross_entropy_forward(x, t, self.reduction, self.ignore_index)
        self._cuda_saved = (probs, t, denom)  # p of (S7), y, and D of (S8)
        self._input_shape = tuple(x.shape)
        self._loss_shape = tuple(loss.shape) if self.reduction == "none" else ()
        return loss

    def _backward_cuda(self, grad):
        probs, t, denom = self._saved(self._cuda_saved, "the softmax of its forward")
        return cuda_kernels().cross_entropy_backward(probs, t, denom, self._cuda_upstream(grad),
                                                     self.ignore_index)  # (p - onehot(y)) g / D, (S7)-(S8)
