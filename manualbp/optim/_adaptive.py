"""What Adam, RMSprop and Adagrad share: torch's checks of their hyper-parameters (with torch's messages),
the refusal of torch's options that would change the math, and the per-parameter buffers kept where the
parameter is."""
import numpy as np

from .. import kernels
from ..device import cast
from ..kernels import flat as flat_layout
from .optimizer import Optimizer, check_number

# torch's keyword-only options: foreach/fused pick torch's own implementation (here one kernel per
# parameter does it) and any value is accepted; the others change the math and are refused when set.
REFUSED = {"maximize": "manualbp's optimizers minimise", "differentiable": "there is no graph through the update",
           "capturable": "CUDA graph capture is torch's"}


class AdaptiveOptimizer(Optimizer):
    """An optimizer whose state is a step count and buffers of each parameter's shape, zero at the start."""

    def _refuse(self, options):
        for key, value in options.items():
            if key in REFUSED and value:
                raise ValueError(f"{type(self).__name__}: {key}=True is not supported ({REFUSED[key]}); "
                                 f"leave {key}=False")

    def _check_common(self, group):
        who = type(self).__name__
        self._refuse({k: group.get(k) for k in REFUSED})
        for key, label in (("lr", "learning rate"), ("eps", "epsilon value"), ("weight_decay", "weight_decay value")):
            group[key] = nonnegative(group[key], who, key, label)

    def _grad(self, p):
        """p's gradient, or None when p is skipped (no gradient yet, or frozen)."""
        if p.grad is None or not p.requires_grad:
            return None
        if tuple(p.grad.shape) != tuple(p.data.shape) or p.grad.dtype != p.data.dtype:
            raise ValueError(f"{type(self).__name__}: gradient of shape {tuple(p.grad.shape)}/{p.grad.dtype} does "
                             f"not match its parameter {tuple(p.data.shape)}/{p.data.dtype}")
        return p.grad

    def _buffer(self, state, name, p, fill=0.0):
        """state[name] where p is (the model may have moved since), in p's dtype; made full of ``fill`` at first."""
        buf = state.get(name)
        if buf is None:
            buf = np.full(tuple(p.data.shape), fill, dtype=p.data.dtype)
        buf = state[name] = kernels.like(p.data, cast(buf, p.data.dtype, type(self).__name__))
        return buf

    def _flat_group(self, index, group, names):
        """(FlatGroup, step) when one launch can update the whole group now, else None.

        On the GPU, from the second step on, a group's parameters, gradients and state buffers ``names`` lie
        end to end in one device array per kind (``kernels/flat.py``); the update is the same element by
        element, so one launch over the flat arrays is every parameter's update.  It needs all of them still
        in place and every parameter at the same step count (the count enters the bias corrections and
        Adagrad's decay); then each count is advanced here, and the common one returned."""
        flat = self._flat.get(index, (None, 0))[0]
        params = group["params"]
        if flat is None or flat.names != names or not flat.in_place(params, self.state):
            return None
        if len({self.state[id(p)].get("step") for p in params}) != 1:
            return None
        for p in params:
            state = self._count_step(p)
        return flat, state["step"]

    def _flat_after(self, index, group, names):
        """After a step that went parameter by parameter: lay the group out flat for the next one (GPU only)."""
        flat_layout.after_step(self._flat, index, group["params"], self.state, names)

    def _count_step(self, p):
        """The parameter's state with its step count advanced by one (torch counts before it updates)."""
        state = self.state.setdefault(id(p), {})
        state["step"] = float(state.get("step", 0.0)) + 1.0
        return state


def nonnegative(value, who, name, label):
    """``value`` as a float, refused with torch's message ``Invalid <label>: <value>`` unless 0 <= value < inf."""
    value = check_number(value, who, name)
    if not value >= 0.0:
        raise ValueError(f"{who}: Invalid {label}: {value} (expected {name} >= 0)")
    return value


def flag(value, who, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: expected {name} to be a bool, got {value!r}")
    return bool(value)
