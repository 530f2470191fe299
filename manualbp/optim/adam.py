"""Adam and AdamW: steps scaled by running estimates of the gradient's first and second moments.

Derivation: derivations/12-adaptive-optimizers.md
"""
import numbers

from .. import kernels
from ._adaptive import AdaptiveOptimizer, flag


class Adam(AdaptiveOptimizer):
    r"""Adam, exactly as ``torch.optim.Adam`` (its single-tensor loop, in the same order of operations).

    Args:
        params: ``model.parameters()`` or a list of parameter-group dicts.
        lr: learning rate (>= 0, default 1e-3).
        betas: (beta1, beta2), the decay rates of the two moments, each in [0, 1) (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: lambda (default 0): an L2 penalty added to the gradient, or with
            ``decoupled_weight_decay=True`` (AdamW) a shrinking of the weights apart from the gradient.
        amsgrad: divide by the largest second moment seen so far (default False).
        foreach, fused: accepted (they pick torch's implementation); maximize, capturable, differentiable:
            refused when True.

    Algorithm, for each parameter theta with gradient g, at step t = 1, 2, ... (D1)-(D8)::

        g <- g + lambda theta                  (Adam's L2, D6)   or   theta <- theta (1 - lr lambda)  (AdamW, D7)
        m <- beta1 m + (1 - beta1) g                                                            (D1)
        v <- beta2 v + (1 - beta2) g^2                                                          (D2)
        v_max <- max(v_max, v), used instead of v                                 with amsgrad  (D8)
        theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)          (D5)

    m and v start at zero, which biases them towards zero early on; dividing by 1 - beta^t removes that
    bias (D3), (D4).  State per parameter (torch's keys): ``step``, ``exp_avg``, ``exp_avg_sq`` and, with
    amsgrad, ``max_exp_avg_sq``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False):
        self._refuse({"maximize": maximize, "capturable": capturable, "differentiable": differentiable})
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                                  "capturable": capturable, "differentiable": differentiable, "fused": fused,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _check_group(self, group):
        who = type(self).__name__
        self._check_common(group)
        betas = group["betas"]
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{who}: expected betas to be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
                raise TypeError(f"{who}: expected betas[{i}] to be a number, got {type(beta).__name__} {beta!r}")
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{who}: Invalid beta parameter at index {i}: {beta} (expected 0 <= beta < 1)")
        group["betas"] = (float(betas[0]), float(betas[1]))
        group["amsgrad"] = flag(group["amsgrad"], who, "amsgrad")
        group["decoupled_weight_decay"] = flag(group["decoupled_weight_decay"], who, "decoupled_weight_decay")

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place (a frozen one is skipped); returns
        ``closure()`` when one is given, which is called first (as torch)."""
        loss = closure() if closure is not None else None
        for index, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            amsgrad = group["amsgrad"]
            names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
            flat = self._flat_group(index, group, names)
            if flat is not None:  # the whole group in one launch over its flat arrays (kernels/flat.py)
                f, step = flat
                kernels.adam_update(f.data, f.grad, f.state["exp_avg"], f.state["exp_avg_sq"],
                                    f.state.get("max_exp_avg_sq"), group["lr"], beta1, beta2, group["eps"],
                                    group["weight_decay"], step, amsgrad, group["decoupled_weight_decay"])
                continue
            for p in group["params"]:
                g = self._grad(p)
                if g is None:
                    continue
                state = self._count_step(p)
                m = self._buffer(state, "exp_avg", p)
                v = self._buffer(state, "exp_avg_sq", p)
                v_max = self._buffer(state, "max_exp_avg_sq", p) if amsgrad else None
                # (D1)-(D8) for every element in one pass (kernels/cpu/adaptive.py, or one CUDA kernel launch;
                # the NumPy twin, reference.adam_update, spells the update out line by line)
                kernels.adam_update(p.data, g, m, v, v_max, group["lr"], beta1, beta2, group["eps"],
                                    group["weight_decay"], state["step"], amsgrad, group["decoupled_weight_decay"])
            self._flat_after(index, group, names)
        return loss


class AdamW(Adam):
    r"""AdamW, exactly as ``torch.optim.AdamW``: Adam whose weight decay (default 1e-2) shrinks the weights,
    theta <- theta (1 - lr lambda), apart from the adaptive step (D7), instead of entering the gradient as an
    L2 penalty, where the division by sqrt(v) would weaken it for parameters with large gradients.
    Arguments as :class:`Adam`."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
