"""The smooth activations in plain NumPy: GELU, SiLU, ELU, Softplus and their backwards, the readable
twins of ``cpu/activation_extra.py`` and ``cuda/activation_extra.py`` (imported by ``reference.py``, so
each is ``reference.<name>``).

Derivation: derivations/17-gelu-silu-elu.md (U1)-(U10).

Each formula is torch's, term for term, so NaN and the infinities come out as torch's do (a NaN input
gives a NaN, except for ELU's slope, which is 1 there: the test ``x <= 0`` fails for a NaN).  Everything
is computed in float64 and rounded to the input's dtype once, at the end; the CPU kernels do the same.
"""
import math

import numpy as np

SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi): the normal density's constant, (U2)
TANH_BETA = 0.7978845608028654  # sqrt(2 / pi), (U3)
TANH_KAPPA = 0.044715  # (U3)


def _erf(z):
    """erf of every element (NumPy has none: Python's math.erf, one number at a time)."""
    return np.array([math.erf(v) for v in z.ravel().tolist()], dtype=np.float64).reshape(z.shape)


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _as(y, like):
    """y rounded to like's dtype, an array even when 0-d (NumPy turns 0-d arithmetic into scalars)."""
    return np.asarray(y, dtype=like.dtype)


def gelu_forward(x, approximate):
    """y = x Phi(x) = x/2 (1 + erf(x / sqrt 2))  (U1); approximate='tanh':
    y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (U3)."""
    (v,) = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "tanh":
            y = 0.5 * v * (1 + np.tanh(TANH_BETA * (v + TANH_KAPPA * v * v * v)))  # (U3)
        else:
            y = v * 0.5 * (1 + _erf(v * SQRT1_2))  # (U1)
    return _as(y, x)


def gelu_backward(grad_y, x, approximate):
    """dL/dx = dL/dy (Phi(x) + x phi(x))  (U2); approximate='tanh': the product rule on (U3), with
    t = tanh(inner), dL/dx = dL/dy (1/2 (1 + t) + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))  (U4)."""
    g, v = _f64(grad_y, x)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "tanh":
            t = np.tanh(TANH_BETA * (v + TANH_KAPPA * v * v * v))
            slope = 0.5 * (1 + t) + 0.5 * v * ((1 - t * t) * TANH_BETA * (1 + 3 * TANH_KAPPA * v * v))  # (U4)
        else:
            cdf = 0.5 * (1 + _erf(v * SQRT1_2))  # Phi(x)
            pdf = INV_SQRT_2PI * np.exp(-0.5 * v * v)  # phi(x)
            slope = cdf + v * pdf  # (U2)
    return _as(g * slope, grad_y)


def silu_forward(x):
    """y = x sigma(x), written x / (1 + e^-x)  (U5)."""
    (v,) = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        return _as(v / (1 + np.exp(-v)), x)


def silu_backward(grad_y, x):
    """dL/dx = dL/dy s (1 + x (1 - s)), s = sigma(x)  (U6)."""
    g, v = _f64(grad_y, x)
    with np.errstate(invalid="ignore", over="ignore"):
        s = 1 / (1 + np.exp(-v))
        return _as(g * s * (1 + v * (1 - s)), grad_y)


def elu_forward(x, alpha):
    """y = x where x > 0, else alpha (e^x - 1)  (U7) (expm1: exact for x near 0)."""
    (v,) = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        return _as(np.where(v <= 0, alpha * np.expm1(np.minimum(v, 0)), v), x)


def elu_backward(grad_y, x, alpha):
    """dL/dx = dL/dy alpha e^x where x <= 0, else dL/dy (a NaN x takes the second branch, as torch)  (U8)."""
    g, v = _f64(grad_y, x)
    with np.errstate(invalid="ignore", over="ignore"):
        return _as(np.where(v <= 0, g * alpha * np.exp(np.minimum(v, 0)), g), grad_y)


def softplus_forward(x, beta, threshold):
    """y = log(1 + e^(beta x)) / beta, or x itself where beta x > threshold  (U9)."""
    (v,) = _f64(x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        bx = v * beta
        return _as(np.where(bx > threshold, v, np.log1p(np.exp(bx)) / beta), x)


def softplus_backward(grad_y, x, beta, threshold):
    """dL/dx = dL/dy z / (z + 1), z = e^(beta x), or dL/dy where beta x > threshold  (U10)."""
    g, v = _f64(grad_y, x)
    with np.errstate(invalid="ignore", over="ignore"):
        bx = v * beta
        z = np.exp(bx)
        return _as(np.where(bx > threshold, g, g * z / (z + 1)), grad_y)


__all__ = ["elu_backward", "elu_forward", "gelu_backward", "gelu_forward", "silu_backward", "silu_forward",
           "softplus_backward", "softplus_forward"]
