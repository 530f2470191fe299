"""Finite-difference gradient checks, for manualbp's own layers and for yours.

Derivation: derivations/01-chain-rule.md (the derivative as a limit (C1), and why the
central difference (f(x+h) - f(x-h)) / 2h is accurate to O(h^2), (C11)).

    from manualbp.gradcheck import gradcheck
    gradcheck(nn.Linear(3, 2).double(), np.random.rand(4, 3))   # True, or raises

``gradcheck`` treats the module as a function of its input and of each
parameter, forms L = sum(y * R) for a fixed random R (so every output element
matters), and compares the module's ``backward`` with central differences.
"""
import numpy as np

from .nn.module import Module


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar function ``f()`` with respect to array ``x`` (changed and restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = float(f())
        flat[i] = old - eps
        minus = float(f())
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(module, x, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0, raise_exception=True):
    """Compare ``module.backward`` with finite differences, for the input and every parameter.

    Use float64 (``module.double()``, ``x.astype(np.float64)``): in float32 the difference
    quotient loses most of its digits.  Returns True, or raises ``AssertionError`` naming the
    first mismatching tensor (returns False instead with ``raise_exception=False``).
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck expected a Module, got {type(module).__name__}")
    x = np.array(x, dtype=np.float64, copy=True)
    if any(p.dtype != np.float64 for p in module.parameters()):
        raise TypeError("gradcheck needs float64 parameters: call module.double() first")
    rng = np.random.default_rng(seed)
    y = module(x)
    r = rng.standard_normal(y.shape)

    def loss():
        return np.sum(module(x) * r)

    module.zero_grad()
    module(x)
    grad_x = module.backward(r.copy())
    analytic = [("input", grad_x, x)] + [
        (name, p.grad if p.grad is not None else np.zeros_like(p.data), p.data)
        for name, p in module.named_parameters()]
    for name, g, arr in analytic:
        num = numerical_grad(loss, arr, eps)
        if not np.allclose(g, num, rtol=rtol, atol=atol):
            err = np.max(np.abs(g - num))
            msg = f"gradcheck: backward and finite differences disagree for {name}: max abs error {err:.3g}"
            if raise_exception:
                raise AssertionError(msg)
            return False
    return True
