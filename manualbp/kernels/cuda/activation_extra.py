"""The smooth activations on the GPU: GELU (exact and tanh), SiLU, ELU, Softplus, forward and backward.

Derivation: derivations/17-gelu-silu-elu.md (U1)-(U10); NumPy twins in ``reference_activation_extra.py``.

One thread per element, ``i = cuda.grid(1)``, on the flat views of C-contiguous float32 arrays, as the
activations of ``elementwise.py``.  One kernel per direction takes the activation as ``kind`` and its two
numbers ``a``, ``b`` (ELU's alpha; Softplus's beta and threshold), as the CPU's do.  Everything is
float32: the constants are ``float32(...)`` and math.erf/exp/tanh/expm1/log1p run their float32 forms.
"""
import math

import numpy as np
from numba import cuda, float32

from .launch import THREADS, blocks, device_f32, flat, output

GELU, GELU_TANH, SILU, ELU, SOFTPLUS = 0, 1, 2, 3, 4


@cuda.jit(device=True, inline=True)
def _value(v, kind, a, b):
    """The activation at one float32 v."""
    half, one = float32(0.5), float32(1.0)
    if kind == GELU:
        return v * half * (one + math.erf(v * float32(0.7071067811865476)))  # (U1)
    if kind == GELU_TANH:
        inner = float32(0.7978845608028654) * (v + float32(0.044715) * v * v * v)
        return half * v * (one + math.tanh(inner))  # (U3)
    if kind == SILU:
        return v / (one + math.exp(-v))  # (U5)
    if kind == ELU:
        return a * math.expm1(v) if v <= float32(0.0) else v  # (U7)
    bx = v * a  # Softplus: a = beta, b = threshold
    return v if bx > b else math.log1p(math.exp(bx)) / a  # (U9)


@cuda.jit(device=True, inline=True)
def _slope(v, kind, a, b):
    """dy/dx at one float32 v."""
    half, one = float32(0.5), float32(1.0)
    if kind == GELU:
        pdf = float32(0.3989422804014327) * math.exp(-half * v * v)
        return half * (one + math.erf(v * float32(0.7071067811865476))) + v * pdf  # (U2)
    if kind == GELU_TANH:
        beta, kappa = float32(0.7978845608028654), float32(0.044715)
        t = math.tanh(beta * (v + kappa * v * v * v))
        return half * (one + t) + half * v * ((one - t * t) * beta * (one + float32(3.0) * kappa * v * v))  # (U4)
    if kind == SILU:
        s = one / (one + math.exp(-v))
        return s * (one + v * (one - s))  # (U6)
    if kind == ELU:
        return a * math.exp(v) if v <= float32(0.0) else one  # (U8)
    bx = v * a
    if bx > b:
        return one  # (U10)
    z = math.exp(bx)
    return z / (z + one)


def _forward(x, kind, a, b, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = _value(x[i], kind, a, b)


def _backward(gy, x, kind, a, b, gx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        gx[i] = gy[i] * _slope(x[i], kind, a, b)


activation_forward_kernel = cuda.jit(_forward)
activation_backward_kernel = cuda.jit(_backward)


def _forward_op(who, x, kind, a=0.0, b=0.0, out=None):
    device_f32(x, who, "x")
    y = output(out, x.shape, who)
    if y.size:
        activation_forward_kernel[blocks(y.size), THREADS](flat(x), kind, np.float32(a), np.float32(b), flat(y))
    return y


def _backward_op(who, grad_y, x, kind, a=0.0, b=0.0, out=None):
    device_f32(x, who, "x")
    device_f32(grad_y, who, "grad_y", shape=x.shape)
    gx = output(out, x.shape, who)
    if gx.size:
        activation_backward_kernel[blocks(gx.size), THREADS](flat(grad_y), flat(x), kind, np.float32(a),
                                                             np.float32(b), flat(gx))
    return gx


def _gelu_kind(approximate):
    return GELU_TANH if approximate == "tanh" else GELU


def gelu_forward(x, approximate, out=None):
    """(U1), or (U3) with approximate='tanh'.  NumPy twin: ``reference.gelu_forward``."""
    return _forward_op("cuda gelu_forward", x, _gelu_kind(approximate), out=out)


def gelu_backward(grad_y, x, approximate, out=None):
    """(U2), or (U4) with approximate='tanh'.  NumPy twin: ``reference.gelu_backward``."""
    return _backward_op("cuda gelu_backward", grad_y, x, _gelu_kind(approximate), out=out)


def silu_forward(x, out=None):
    """(U5).  NumPy twin: ``reference.silu_forward``."""
    return _forward_op("cuda silu_forward", x, SILU, out=out)


def silu_backward(grad_y, x, out=None):
    """(U6).  NumPy twin: ``reference.silu_backward``."""
    return _backward_op("cuda silu_backward", grad_y, x, SILU, out=out)


def elu_forward(x, alpha, out=None):
    """(U7).  NumPy twin: ``reference.elu_forward``."""
    return _forward_op("cuda elu_forward", x, ELU, alpha, out=out)


def elu_backward(grad_y, x, alpha, out=None):
    """(U8).  NumPy twin: ``reference.elu_backward``."""
    return _backward_op("cuda elu_backward", grad_y, x, ELU, alpha, out=out)


def softplus_forward(x, beta, threshold, out=None):
    """(U9).  NumPy twin: ``reference.softplus_forward``."""
    return _forward_op("cuda softplus_forward", x, SOFTPLUS, beta, threshold, out=out)


def softplus_backward(grad_y, x, beta, threshold, out=None):
    """(U10).  NumPy twin: ``reference.softplus_backward``."""
    return _backward_op("cuda softplus_backward", grad_y, x, SOFTPLUS, beta, threshold, out=out)


__all__ = ["elu_backward", "elu_forward", "gelu_backward", "gelu_forward", "silu_backward", "silu_forward",
           "softplus_backward", "softplus_forward"]
