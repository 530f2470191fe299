"""The smooth activations on the CPU, compiled by Numba: GELU (exact and tanh), SiLU, ELU, Softplus.

Derivation: derivations/17-gelu-silu-elu.md (U1)-(U10); readable twins in
``reference_activation_extra.py`` (``tests/test_activation_extra.py`` holds them equal).

Unlike ReLU (one comparison per element, which NumPy runs at memory speed), these call erf, exp, tanh or
log1p per element, and written in NumPy each would take several passes and temporaries.  One compiled
loop per direction does it in one pass: ``_forward`` and ``_backward`` take the activation as ``kind``
(a switch LLVM hoists out of the loop) and its two numbers ``a``, ``b`` (ELU's alpha; Softplus's beta
and threshold).  Each element is computed in float64, as in the twins, and rounded once when stored.

Parallelism: threads take chunks of ``CHUNK`` elements (prange); every element is its own output, so
nothing depends on the thread count.  Below ``PARALLEL_MIN_ELEMENTS`` the serial twin runs instead.
No fast-math: NaN and the infinities must behave as in torch; and NumPy's error model, so that a division by
zero (Softplus with beta = 0) gives an infinity, as in torch, rather than raising.
"""
import math

import numpy as np
from numba import njit, prange

GELU, GELU_TANH, SILU, ELU, SOFTPLUS = 0, 1, 2, 3, 4
CHUNK = 1 << 12
PARALLEL_MIN_ELEMENTS = 1 << 15

SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
TANH_BETA = 0.7978845608028654  # sqrt(2 / pi)
TANH_KAPPA = 0.044715


@njit(cache=True, error_model="numpy")
def _value(v, kind, a, b):
    """The activation at one float64 v."""
    if kind == GELU:
        return v * 0.5 * (1.0 + math.erf(v * SQRT1_2))  # (U1)
    if kind == GELU_TANH:
        return 0.5 * v * (1.0 + math.tanh(TANH_BETA * (v + TANH_KAPPA * v * v * v)))  # (U3)
    if kind == SILU:
        return v / (1.0 + math.exp(-v))  # (U5)
    if kind == ELU:
        return a * math.expm1(v) if v <= 0.0 else v  # (U7)
    bx = v * a  # Softplus, a = beta, b = threshold
    return v if bx > b else math.log1p(math.exp(bx)) / a  # (U9)


@njit(cache=True, error_model="numpy")
def _slope(v, kind, a, b):
    """dy/dx at one float64 v."""
    if kind == GELU:
        return 0.5 * (1.0 + math.erf(v * SQRT1_2)) + v * (INV_SQRT_2PI * math.exp(-0.5 * v * v))  # (U2)
    if kind == GELU_TANH:
        t = math.tanh(TANH_BETA * (v + TANH_KAPPA * v * v * v))
        return 0.5 * (1.0 + t) + 0.5 * v * ((1.0 - t * t) * TANH_BETA * (1.0 + 3.0 * TANH_KAPPA * v * v))  # (U4)
    if kind == SILU:
        s = 1.0 / (1.0 + math.exp(-v))
        return s * (1.0 + v * (1.0 - s))  # (U6)
    if kind == ELU:
        return a * math.exp(v) if v <= 0.0 else 1.0  # (U8)
    bx = v * a
    if bx > b:
        return 1.0  # (U10)
    z = math.exp(bx)
    return z / (z + 1.0)


@njit(cache=True, parallel=True, error_model="numpy")
def _forward(x, y, kind, a, b):
    """y[i] = f(x[i]) over flat arrays, threads on chunks."""
    n = x.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            y[i] = _value(np.float64(x[i]), kind, a, b)


@njit(cache=True, error_model="numpy")
def _forward_serial(x, y, kind, a, b):
    for i in range(x.shape[0]):
        y[i] = _value(np.float64(x[i]), kind, a, b)


@njit(cache=True, parallel=True, error_model="numpy")
def _backward(g, x, gx, kind, a, b):
    """gx[i] = g[i] * f'(x[i]) over flat arrays, threads on chunks."""
    n = x.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            gx[i] = np.float64(g[i]) * _slope(np.float64(x[i]), kind, a, b)


@njit(cache=True, error_model="numpy")
def _backward_serial(g, x, gx, kind, a, b):
    for i in range(x.shape[0]):
        gx[i] = np.float64(g[i]) * _slope(np.float64(x[i]), kind, a, b)


def _c(a):
    """a, C-contiguous (np.ascontiguousarray would turn a 0-d array into a 1-d one)."""
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _run_forward(x, kind, a=0.0, b=0.0):
    x = _c(x)
    y = np.empty_like(x)
    kernel = _forward if x.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    kernel(x.reshape(-1), y.reshape(-1), kind, float(a), float(b))
    return y


def _run_backward(grad_y, x, kind, a=0.0, b=0.0):
    g = _c(grad_y)
    x = _c(x)
    gx = np.empty_like(g)
    kernel = _backward if x.size >= PARALLEL_MIN_ELEMENTS else _backward_serial
    kernel(g.reshape(-1), x.reshape(-1), gx.reshape(-1), kind, float(a), float(b))
    return gx


def gelu_forward(x, approximate):
    """(U1), or (U3) with approximate='tanh'.  Twin: reference.gelu_forward."""
    return _run_forward(x, GELU_TANH if approximate == "tanh" else GELU)


def gelu_backward(grad_y, x, approximate):
    """(U2), or (U4) with approximate='tanh'.  Twin: reference.gelu_backward."""
    return _run_backward(grad_y, x, GELU_TANH if approximate == "tanh" else GELU)


def silu_forward(x):
    """(U5).  Twin: reference.silu_forward."""
    return _run_forward(x, SILU)


def silu_backward(grad_y, x):
    """(U6).  Twin: reference.silu_backward."""
    return _run_backward(grad_y, x, SILU)


def elu_forward(x, alpha):
    """(U7).  Twin: reference.elu_forward."""
    return _run_forward(x, ELU, alpha)


def elu_backward(grad_y, x, alpha):
    """(U8).  Twin: reference.elu_backward."""
    return _run_backward(grad_y, x, ELU, alpha)


def softplus_forward(x, beta, threshold):
    """(U9).  Twin: reference.softplus_forward."""
    return _run_forward(x, SOFTPLUS, beta, threshold)


def softplus_backward(grad_y, x, beta, threshold):
    """(U10).  Twin: reference.softplus_backward."""
    return _run_backward(grad_y, x, SOFTPLUS, beta, threshold)


__all__ = ["elu_backward", "elu_forward", "gelu_backward", "gelu_forward", "silu_backward", "silu_forward",
           "softplus_backward", "softplus_forward"]
