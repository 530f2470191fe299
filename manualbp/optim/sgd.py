"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

Derivation: derivations/09-sgd-momentum.md
"""
import numpy as np

from .. import kernels
from ..device import cast
from ..kernels import flat as flat_layout
from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    r"""theta <- theta - lr * g, with optional momentum, exactly as ``torch.optim.SGD``.

    Args:
        params: ``model.parameters()`` or a list of parameter-group dicts.
        lr: learning rate (>= 0, as torch; 0 leaves the weights as they are).
        momentum: momentum factor mu in [0, 1) (default 0).
        dampening: dampening tau for momentum (default 0).
        weight_decay: L2 penalty lambda (default 0).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize, foreach, differentiable, fused: torch's keyword-only options; foreach/fused are accepted
            (they pick torch's implementation), maximize/differentiable=True are refused.

    Algorithm, for each parameter theta with gradient g, at step t (O3-O6)::

        g <- g + lambda * theta                      if weight_decay != 0   (O3)
        b <- g                                       at the first step       (O4)
        b <- mu * b + (1 - tau) * g                  afterwards              (O4)
        g <- g + mu * b   if nesterov, else  g <- b                          (O5)
        theta <- theta - lr * g                                              (O6)

    On the GPU, from its second step on, a group's parameters, gradients and momentum buffers lie end to
    end in three device arrays (``kernels/flat.py``), and the update is one kernel launch over all of them.

    The tutorials write momentum another way: v <- a * v + lr * g; theta <- theta - v  (O7).
    With a constant lr (and dampening 0) the two are the same update: v = lr * b at every step,
    because the tutorials' v just carries the factor lr inside the buffer.  They differ as soon
    as lr changes during training (a schedule): torch's buffer b holds raw gradients and the
    new lr scales all of it at once, while v keeps the old lr baked into its history.  They
    also differ at the first step when dampening != 0: torch's first buffer is g undamped.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False,
                 foreach=None, differentiable=False, fused=None):
        # torch's keyword-only options: foreach and fused choose torch's own implementations (one kernel does
        # it here), so any value is accepted; maximize and differentiable change the math: refused by name
        for name, value in (("maximize", maximize), ("differentiable", differentiable)):
            if value:
                raise ValueError(f"SGD: {name}=True is not supported (manualbp's SGD minimises, without a graph "
                                 f"through the update); leave {name}=False")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                      "nesterov": nesterov, "weight_decay": weight_decay})

    def _check_group(self, group):
        who = "SGD"
        group["lr"] = check_number(group["lr"], who, "lr")
        if group["lr"] < 0:  # 0 is allowed, as torch: where a cosine schedule ends (CosineAnnealingLR's eta_min)
            raise ValueError(f"SGD: invalid lr {group['lr']}: expected lr >= 0")
        group["momentum"] = check_number(group["momentum"], who, "momentum", low=0.0, high=1.0, high_open=True)
        group["dampening"] = check_number(group["dampening"], who, "dampening", low=0.0, high=1.0)
        group["weight_decay"] = check_number(group["weight_decay"], who, "weight_decay", low=0.0)
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"SGD: expected nesterov to be a bool, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")

    def step(self):
        """Update every parameter that has a gradient, in place; a frozen one (``requires_grad=False``) is skipped."""
        flats = self._flat
        for index, group in enumerate(self.param_groups):
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            flat = flats.get(index, (None, 0))[0]
            if flat is not None and flat.in_place(group["params"], self.state):
                # every parameter of the group at once: (O3)-(O6) element by element over the flat arrays
                kernels.sgd_update(flat.data, flat.grad, flat.buf, lr, mu, tau, wd, nesterov, False)
                continue
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:  # no gradient yet, or frozen
                    continue
                if tuple(p.grad.shape) != tuple(p.data.shape) or p.grad.dtype != p.data.dtype:
                    raise ValueError(f"SGD: gradient of shape {tuple(p.grad.shape)}/{p.grad.dtype} does not "
                                     f"match its parameter {tuple(p.data.shape)}/{p.data.dtype}")
                buf, first = None, False
                if mu != 0:
                    state = self.state.setdefault(id(p), {})
                    buf = state.get("momentum_buffer")
                    first = buf is None  # torch's first buffer is the gradient itself (O4): the kernel writes it
                    if first:
                        buf = state["momentum_buffer"] = kernels.empty_like(p.data)
                    elif not (type(buf) is type(p.data) is np.ndarray and buf.dtype == p.data.dtype
                              and buf.flags.c_contiguous):  # (else: already where and what it must be)
                        # where the parameter is (the model may have moved since), in its dtype and layout
                        buf = state["momentum_buffer"] = kernels.like(p.data, cast(buf, p.data.dtype, "SGD"))
                # (O3)-(O6) for every element, in one compiled loop (kernels/cpu/optim.py, or one CUDA kernel
                # launch on the GPU; the NumPy twin, reference.sgd_update, spells the update out line by line)
                kernels.sgd_update(p.data, p.grad, buf, lr, mu, tau, wd, nesterov, first)
            flat_layout.after_step(flats, index, group["params"], self.state, mu != 0)
