"""Gradient flow during training: per parameter, the norm of its gradient, of its weights, and how far a step
moved it (``GradientRecorder``, ``fit(record_gradients=...)``).

For a parameter ``w`` with gradient ``g = w.grad`` at one step (before the update) and ``w'`` after it:

    grad_norm    = ||g||                       (the .grad backward() left, before any weight decay is added)
    weight_norm  = ||w||                       (the weights the gradient was computed at)
    update_ratio = ||w' - w|| / ||w||          (the step's size relative to the weights; None when ||w|| = 0)

where ``||.||`` is the Euclidean (Frobenius) norm over all the parameter's entries, summed in float64.  A
rule of thumb from CS231n: an update ratio around 1e-3 is healthy; far below, the layer barely learns; far
above, the step is too large for it.  A parameter with no gradient at that step (``.grad`` is None) gets
None in all three.

Modes: ``"epoch"`` records the last step of every epoch (one row per parameter per epoch); ``"step"``
records every step.  The weights before a recorded step are copied (to the host) just before it; nothing
is copied or computed for a step that is not recorded, so ``"epoch"`` costs one copy of the weights per
epoch (each step's, when the batches' number is unknown in advance) and ``None`` costs nothing.
"""
import math

import numpy as np

from ..device import to_numpy

MODES = ("epoch", "step", None)
GRADIENT_FIELDS = ("epoch", "step", "param", "grad_norm", "weight_norm", "update_ratio")


def check_mode(mode, who):
    if mode not in MODES:
        raise ValueError(f"{who}: record_gradients must be 'epoch' (the last step of every epoch), 'step' "
                         f"(every step) or None (nothing), got {mode!r}")
    return mode


def _norm(a):
    a = np.asarray(a, dtype=np.float64).ravel()
    return math.sqrt(float(np.dot(a, a)))


class GradientRecorder:
    """Measures the steps ``mode`` asks for and appends their rows to ``history.gradients``.

    ``fit`` calls ``before_step(last)`` just before a step (``last``: True for the epoch's last step, None
    when that is unknown) and ``after_step(epoch, step, history)`` just after it, while the gradients the
    step used are still in ``.grad`` (the next step's ``zero_grad`` clears them); ``end_epoch(history)``
    once the epoch's steps are done.  Without knowing which step is an epoch's last (an iterable with no
    ``len``), ``"epoch"`` measures every step and keeps the latest.
    """

    def __init__(self, model, mode):
        self.model, self.mode = model, mode
        self._before = None    # name -> the weights before the step under way (float64 host copies)
        self._pending = None   # "epoch": the rows of the latest measured step, kept until the epoch ends

    def before_step(self, last):
        """Copy the weights if the coming step is to be measured (``last``: the epoch's last step? None: unknown)."""
        if self.mode == "step" or (self.mode == "epoch" and last is not False):
            self._before = {name: np.array(to_numpy(p.data), dtype=np.float64)
                            for name, p in self.model.named_parameters()}
        else:
            self._before = None

    def after_step(self, epoch, step, history):
        """Measure the step just taken (global ``step`` number, 1-based) if ``before_step`` copied its weights."""
        before, self._before = self._before, None
        if before is None:
            return
        rows = []
        for name, p in self.model.named_parameters():
            row = {"epoch": epoch, "step": step, "param": name, "grad_norm": None, "weight_norm": None,
                   "update_ratio": None}
            if p.grad is not None:
                w0 = before[name]
                w_norm = _norm(w0)
                moved = _norm(np.asarray(to_numpy(p.data), dtype=np.float64) - w0)
                row.update(grad_norm=_norm(to_numpy(p.grad)), weight_norm=w_norm,
                           update_ratio=moved / w_norm if w_norm > 0 else None)
            rows.append(row)
        if self.mode == "step":
            history.gradients.extend(rows)
        else:
            self._pending = rows

    def end_epoch(self, history):
        """``"epoch"``: keep the rows of the epoch's last step."""
        if self._pending is not None:
            history.gradients.extend(self._pending)
            self._pending = None
