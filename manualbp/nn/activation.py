"""Element-wise activations and Softmax.

Derivation: derivations/06-activations.md

Each forward keeps the one array its backward needs; each backward multiplies
the incoming gradient by the local derivative, element by element (the
Jacobian of an element-wise function is diagonal, so the chain rule needs no
matrix product).  Softmax is the exception: every output depends on every
input along ``dim``, see (A9)-(A11).
"""
import warnings

import numpy as np

from .. import kernels
from .._checks import float_array, real_number
from .module import Module


class _Elementwise(Module):
    """Shared bookkeeping: validate the input, check grad_output against what forward saved."""

    def _check_grad(self, grad_output, saved):
        g = float_array(grad_output, f"{type(self).__name__}.backward", "grad_output", like=saved, allow_empty=True)
        if tuple(g.shape) != tuple(saved.shape):
            raise ValueError(
                f"{type(self).__name__}.backward: expected grad_output of shape {tuple(saved.shape)}, "
                f"got {tuple(g.shape)}")
        return g


class ReLU(_Elementwise):
    """y = max(x, 0)  (A1);  dy/dx = 1 where x > 0, else 0  (A2) (torch's choice at x = 0)."""

    def __init__(self, inplace=False):
        super().__init__()
        self._x = None  # the input: where x > 0 decides the local derivative of (A2)

    def forward(self, input):
        self._x = float_array(input, "ReLU", allow_empty=True)
        return kernels.relu_forward(self._x)  # (A1)

    def backward(self, grad_output):
        x = self._saved(self._x)
        return kernels.relu_backward(self._check_grad(grad_output, x), x)  # (A2)


class LeakyReLU(_Elementwise):
    """y = x if x > 0 else slope * x  (A3);  dy/dx = 1 or slope  (A4)."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = real_number(negative_slope, "LeakyReLU", "negative_slope")
        self._x = None  # the input: where x > 0 decides (A4)

    def forward(self, input):
        self._x = float_array(input, "LeakyReLU", allow_empty=True)
        return kernels.leaky_relu_forward(self._x, self.negative_slope)  # (A3)

    def backward(self, grad_output):
        x = self._saved(self._x)
        return kernels.leaky_relu_backward(self._check_grad(grad_output, x), x, self.negative_slope)  # (A4)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    """s = 1 / (1 + e^-x)  (A5);  ds/dx = s (1 - s)  (A6): backward needs only the output."""

    def __init__(self, *args, **kwargs):  # torch's signature: it takes (and ignores) any arguments
        super().__init__()
        self._s = None  # the output s, for (A6)

    def forward(self, input):
        self._s = kernels.sigmoid_forward(float_array(input, "Sigmoid", allow_empty=True))  # (A5), without overflow
        return self._s

    def backward(self, grad_output):
        s = self._saved(self._s, "its output")
        return kernels.sigmoid_backward(self._check_grad(grad_output, s), s)  # (A6)


class Tanh(_Elementwise):
    """t = tanh(x)  (A7);  dt/dx = 1 - t^2  (A8)."""

    def __init__(self, *args, **kwargs):  # torch's signature: it takes (and ignores) any arguments
        super().__init__()
        self._t = None  # the output t, for (A8)

    def forward(self, input):
        self._t = kernels.tanh_forward(float_array(input, "Tanh", allow_empty=True))  # (A7)
        return self._t

    def backward(self, grad_output):
        t = self._saved(self._t, "its output")
        return kernels.tanh_backward(self._check_grad(grad_output, t), t)  # (A8)


class Softmax(_Elementwise):
    """p_i = e^{x_i} / sum_j e^{x_j} along ``dim``  (A9).

    Backward with the Jacobian dp_i/dx_j = p_i (delta_ij - p_j)  (A10), applied without
    building it: dL/dx = p * (g - sum_j g_j p_j)  (A11).
    """

    def __init__(self, dim=None):
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))):
            raise TypeError(f"Softmax: expected dim to be an int, got {type(dim).__name__}")
        self.dim = dim
        self._p = None  # the output p, for (A11)

    def _axis(self, x):
        if self.dim is None:  # torch's legacy rule for an unspecified dim, with torch's warning
            warnings.warn("Implicit dimension choice for softmax has been deprecated. Change the call to include "
                          "dim=X as an argument.", UserWarning, stacklevel=4)
            return 0 if x.ndim in (0, 1, 3) else 1
        if not -max(x.ndim, 1) <= self.dim < max(x.ndim, 1):  # a 0-d input has dims -1 and 0, as in torch
            raise ValueError(f"Softmax(dim={self.dim}): dim out of range for input of shape {tuple(x.shape)}")
        return self.dim % max(x.ndim, 1)

    _forward_op, _backward_op = staticmethod(kernels.softmax_forward), staticmethod(kernels.softmax_backward)

    def forward(self, input):
        x = float_array(input, type(self).__name__, allow_empty=True)
        self._axis_used = self._axis(x)
        self._scalar = x.ndim == 0  # a 0-d input is a line of one value: computed as shape (1,), given back 0-d
        if x.size == 0:  # nothing to normalise: an empty output, as torch
            p = kernels.empty_like(x)
        else:
            p = self._forward_op(x.reshape(1) if self._scalar else x, self._axis_used)  # (A9) / (A12)
        self._p = p  # the output: (A11) and (A13) need only it
        return p.reshape(()) if self._scalar else p

    def backward(self, grad_output):
        p = self._saved(self._p, "its output")
        g = self._check_grad(grad_output, p.reshape(()) if self._scalar else p)
        if p.size == 0:
            return kernels.empty_like(p)
        grad_x = self._backward_op(g.reshape(1) if self._scalar else g, p, self._axis_used)  # (A11) / (A13)
        return grad_x.reshape(()) if self._scalar else grad_x

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log p_i = x_i - m - log sum_j e^{x_j - m} along ``dim``, m the maximum  (A12): the log of a softmax
    without ever taking the log of a rounded 0 (feed it to NLLLoss; CrossEntropyLoss does both at once).

    Backward from the output y = log p: dL/dx = g - e^y sum_j g_j  (A13), what (A11) becomes once the
    log's derivative 1/p is folded in.
    """

    # Softmax's forward and backward, with (A12) and (A13) in place of (A9) and (A11)
    _forward_op, _backward_op = staticmethod(kernels.log_softmax_forward), staticmethod(kernels.log_softmax_backward)
