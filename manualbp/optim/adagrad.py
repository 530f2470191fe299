"""Adagrad: each coordinate's step divided by the root of the sum of all its squared gradients so far.

Derivation: derivations/12-adaptive-optimizers.md
"""
from .. import kernels
from ._adaptive import AdaptiveOptimizer, nonnegative


class Adagrad(AdaptiveOptimizer):
    r"""Adagrad, exactly as ``torch.optim.Adagrad``.

    Args:
        params: ``model.parameters()`` or a list of parameter-group dicts.
        lr: learning rate (>= 0, default 1e-2).
        lr_decay: the rate falls as lr / (1 + (t - 1) lr_decay) (default 0).
        weight_decay: L2 penalty lambda (default 0).
        initial_accumulator_value: the sum's starting value (default 0).
        eps: added to the root of the sum (default 1e-10).
        foreach, fused: accepted; maximize, differentiable: refused when True.

    Algorithm, for each parameter theta with gradient g, at step t = 1, 2, ... (D13), (D14)::

        g <- g + lambda theta                  if weight_decay != 0
        G <- G + g^2                                                   (D14)
        theta <- theta - lr / (1 + (t - 1) lr_decay) * g / (sqrt(G) + eps)   (D13)

    As torch, the state (``step`` 0 and ``sum`` full of initial_accumulator_value) is made for every
    parameter when the optimizer is built, so ``state_dict()`` has it before the first step.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        self._refuse({"maximize": maximize, "differentiable": differentiable})
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable, "fused": fused})
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[id(p)] = {"step": 0.0}
                self._buffer(state, "sum", p, group["initial_accumulator_value"])

    def _check_group(self, group):
        who = "Adagrad"
        self._check_common(group)
        group["lr_decay"] = nonnegative(group["lr_decay"], who, "lr_decay", "lr_decay value")
        group["initial_accumulator_value"] = nonnegative(group["initial_accumulator_value"], who,
                                                         "initial_accumulator_value", "initial_accumulator_value value")

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place (a frozen one is skipped); returns
        ``closure()`` when one is given, which is called first (as torch)."""
        loss = closure() if closure is not None else None
        for index, group in enumerate(self.param_groups):
            flat = self._flat_group(index, group, ("sum",))
            if flat is not None:  # the whole group in one launch over its flat arrays (kernels/flat.py)
                f, step = flat
                kernels.adagrad_update(f.data, f.grad, f.state["sum"], group["lr"], group["lr_decay"],
                                       group["weight_decay"], group["eps"], step)
                continue
            for p in group["params"]:
                g = self._grad(p)
                if g is None:
                    continue
                state = self._count_step(p)
                state_sum = self._buffer(state, "sum", p, group["initial_accumulator_value"])
                # (D13), (D14) for every element in one pass; the NumPy twin is reference.adagrad_update
                kernels.adagrad_update(p.data, g, state_sum, group["lr"], group["lr_decay"],
                                       group["weight_decay"], group["eps"], state["step"])
            self._flat_after(index, group, ("sum",))
        return loss
