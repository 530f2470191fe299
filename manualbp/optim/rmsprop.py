"""RMSprop: each step divided by a running root-mean-square of the gradient.

Derivation: derivations/12-adaptive-optimizers.md
"""
from .. import kernels
from ._adaptive import AdaptiveOptimizer, flag, nonnegative


class RMSprop(AdaptiveOptimizer):
    r"""RMSprop, exactly as ``torch.optim.RMSprop``.

    Args:
        params: ``model.parameters()`` or a list of parameter-group dicts.
        lr: learning rate (>= 0, default 1e-2).
        alpha: smoothing constant of the running mean of g^2 (>= 0, default 0.99).
        eps: added to the root-mean-square (default 1e-8).
        weight_decay: L2 penalty lambda (default 0).
        momentum: momentum factor mu (>= 0, default 0).
        centered: divide by an estimate of the gradient's standard deviation instead (default False).
        capturable, maximize, differentiable: refused when True; foreach: accepted.

    Algorithm, for each parameter theta with gradient g (D9)-(D12)::

        g <- g + lambda theta                             if weight_decay != 0
        s <- alpha s + (1 - alpha) g^2                                        (D9)
        a <- alpha a + (1 - alpha) g;  d <- sqrt(s - a^2) + eps    centered   (D10)
        d <- sqrt(s) + eps                                         otherwise
        theta <- theta - lr g / d                                  mu == 0    (D11)
        b <- mu b + g / d;  theta <- theta - lr b                  mu > 0     (D12)

    s, a and b start at zero.  State per parameter (torch's keys): ``step``, ``square_avg`` and, when
    used, ``momentum_buffer`` and ``grad_avg``.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        self._refuse({"maximize": maximize, "capturable": capturable, "differentiable": differentiable})
        super().__init__(params, {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                                  "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable})

    def _check_group(self, group):
        who = "RMSprop"
        self._check_common(group)
        group["momentum"] = nonnegative(group["momentum"], who, "momentum", "momentum value")
        group["alpha"] = nonnegative(group["alpha"], who, "alpha", "alpha value")
        group["centered"] = flag(group["centered"], who, "centered")

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place (a frozen one is skipped); returns
        ``closure()`` when one is given, which is called first (as torch)."""
        loss = closure() if closure is not None else None
        for index, group in enumerate(self.param_groups):
            mu, centered = group["momentum"], group["centered"]
            names = ("square_avg",) + (("momentum_buffer",) if mu > 0 else ()) + (("grad_avg",) if centered else ())
            flat = self._flat_group(index, group, names)
            if flat is not None:  # the whole group in one launch over its flat arrays (kernels/flat.py)
                f = flat[0]
                kernels.rmsprop_update(f.data, f.grad, f.state["square_avg"], f.state.get("grad_avg"),
                                       f.state.get("momentum_buffer"), group["lr"], group["alpha"], group["eps"],
                                       group["weight_decay"], mu, centered)
                continue
            for p in group["params"]:
                g = self._grad(p)
                if g is None:
                    continue
                state = self._count_step(p)
                square_avg = self._buffer(state, "square_avg", p)
                buf = self._buffer(state, "momentum_buffer", p) if mu > 0 else None
                grad_avg = self._buffer(state, "grad_avg", p) if centered else None
                # (D9)-(D12) for every element in one pass; the NumPy twin is reference.rmsprop_update
                kernels.rmsprop_update(p.data, g, square_avg, grad_avg, buf, group["lr"], group["alpha"],
                                       group["eps"], group["weight_decay"], mu, centered)
            self._flat_after(index, group, names)
        return loss
