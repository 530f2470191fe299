"""Optimizer: the bookkeeping every update rule shares (parameter groups, state, zero_grad)."""
import numbers

import numpy as np

from ..device import host_array, to_numpy
from ..nn.parameter import Parameter


class Optimizer:
    """Holds parameter groups (lists of Parameters with their own hyper-parameters) and per-parameter state.

    ``params`` is an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}`` whose
    keys override ``defaults`` for that group, as in torch.optim.  A step updates a parameter only when
    it has a gradient and ``requires_grad`` is True (a frozen parameter keeps its values).
    """

    def __init__(self, params, defaults):
        name = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{name}: params should be an iterable of Parameters, got a single Parameter; "
                            f"pass model.parameters() or [param]")
        if isinstance(params, np.ndarray):
            raise TypeError(f"{name}: params should be Parameters (model.parameters()), got a numpy array")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"{name}: params should be an iterable of Parameters, got {type(params).__name__}") from None
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # id(Parameter) -> dict of buffers
        self._flat = {}  # group index -> (FlatGroup or None, times laid out): the GPU's one-launch update, kernels/flat.py
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a parameter group (a dict with ``params`` and any options, the others taken from ``defaults``),
        as torch's ``add_param_group`` (to unfreeze a layer part-way through training, say).  A parameter that
        is in a group already is refused."""
        name = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' key")
        seen = {id(p) for p in self._params()}
        ps = param_group["params"]
        ps = [ps] if isinstance(ps, Parameter) else list(ps)
        for p in ps:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameters, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"{name}: some parameters appear more than once (shape {p.shape}); "
                                 f"each Parameter may be given only once")
            seen.add(id(p))
        full = dict(self.defaults)
        full.update({k: v for k, v in param_group.items() if k != "params"})
        unknown = set(full) - set(self.defaults)
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown)} in a parameter group")
        self._check_group(full)
        full["params"] = ps
        self.param_groups.append(full)

    def _check_group(self, group):
        """Validate one group's hyper-parameters (subclasses override)."""

    def zero_grad(self, set_to_none=True):
        """Clear every gradient: ``None`` by default (torch's default), zeros with set_to_none=False."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def _params(self):
        for group in self.param_groups:
            yield from group["params"]

    def state_dict(self):
        """``{"state": {index: {buffer: array}}, "param_groups": [...]}`` with torch's layout:
        parameters are referred to by their position across all groups."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[pid]: {k: _saved(k, v) for k, v in s.items()}  # NumPy, from the GPU too
                 for pid, s in self.state.items() if pid in index}
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and buffers saved by ``state_dict`` (same parameter layout required)."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise TypeError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)):
            raise ValueError(f"{name}.load_state_dict: the saved parameter groups do not match this optimizer's "
                             f"(sizes {[len(g['params']) for g in groups]} vs "
                             f"{[len(g['params']) for g in self.param_groups]})")
        params = list(self._params())
        new_state = {}
        for key, buffers in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but there are {len(params)}")
            p = params[i]
            entry = {}
            for bname, value in buffers.items():
                value = np.asarray(host_array(value, f"{name}.load_state_dict", bname))  # NumPy or a tensor
                if bname in SCALAR_STATE and value.size == 1:  # a step count: a float on the host, as torch's
                    entry[bname] = float(value.reshape(()))
                    continue
                if value.shape != p.shape:
                    raise ValueError(f"{name}.load_state_dict: {bname} of parameter {i} has shape {value.shape}, "
                                     f"expected {p.shape}")
                entry[bname] = np.array(value, dtype=p.dtype, copy=True)
            new_state[id(p)] = entry
        new_groups = []
        for g, own in zip(groups, self.param_groups):
            merged = {k: v for k, v in g.items() if k != "params"}
            checked = {**self.defaults, **merged}
            self._check_group(checked)  # validates, and normalises (Adam's betas from a JSON list to a tuple)
            new_groups.append({**own, **{k: checked[k] for k in merged}, "params": own["params"]})
        self.param_groups = new_groups
        self.state = new_state


def check_number(value, who, name, low=None, high=None, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: expected {name} to be a number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{who}: expected {name} to be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{who}: invalid {name} {value}: expected {name} >= {low}")
    if high is not None and (value > high or (high_open and value >= high)):
        bound = f"< {high}" if high_open else f"<= {high}"
        raise ValueError(f"{who}: invalid {name} {value}: expected {name} {bound}")
    return float(value)


SCALAR_STATE = ("step",)  # per-parameter state kept as a host float (torch keeps a 0-d float32 tensor)


def _saved(key, value):
    """One state entry as state_dict gives it: a NumPy copy of a buffer (from the GPU too), or a step count as
    a 0-d float32 array, the layout of torch's 0-d float32 tensor."""
    if key in SCALAR_STATE and isinstance(value, float):
        return np.array(value, dtype=np.float32)
    return np.array(to_numpy(value), copy=True)
