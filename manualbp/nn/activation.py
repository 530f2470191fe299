"""Element-wise activations and Softmax.

Derivation: derivations/06-activations.md

Each forward keeps the one array its backward needs; each backward multiplies
the incoming gradient by the local derivative, element by element (the
Jacobian of an element-wise function is diagonal, so the chain rule needs no
matrix product).  Softmax is the exception: every output depends on every
input along ``dim``, see (A9)-(A11).
"""
import numpy as np

from .._checks import float_array, real_number
from ..device import float32_input, unsupported
from ..device import kernels as cuda_kernels
from .module import Module


class _Elementwise(Module):
    """Shared bookkeeping: validate the input, check grad_output's shape."""

    def _check_grad(self, grad_output, saved):
        g = float_array(grad_output, f"{type(self).__name__}.backward", "grad_output")
        if g.shape != saved.shape:
            raise ValueError(
                f"{type(self).__name__}.backward: expected grad_output of shape {tuple(saved.shape)}, "
                f"got {tuple(g.shape)}")
        return g

    def _check_grad_cuda(self, grad_output, saved):
        """The GPU twin of _check_grad: a float32 device array of the saved array's shape."""
        g = float32_input(grad_output, f"{type(self).__name__}.backward", "grad_output")
        if tuple(g.shape) != tuple(saved.shape):
            raise ValueError(
                f"{type(self).__name__}.backward: expected grad_output of shape {tuple(saved.shape)}, "
                f"got {tuple(g.shape)}")
        return g


class ReLU(_Elementwise):
    """y = max(x, 0)  (A1);  dy/dx = 1 where x > 0, else 0  (A2) (torch's choice at x = 0)."""

    def __init__(self, inplace=False):
        super().__init__()
        self._mask = None  # where x > 0: the local derivative of (A2)

    def forward(self, x):
        if self._uses_cuda(x):  # a device array: the same equation as a CUDA kernel (kernels/cuda_elementwise.py)
            return self._forward_cuda(x)
        x = float_array(x, "ReLU")
        self._mask = x > 0
        return np.where(self._mask, x, x.dtype.type(0))  # (A1)

    def backward(self, grad_output):
        if self._backward_uses_cuda(grad_output):
            return self._backward_cuda(grad_output)
        mask = self._saved(self._mask)
        g = self._check_grad(grad_output, mask)
        return np.where(mask, g, g.dtype.type(0))  # (A2)

    def _forward_cuda(self, x):
        self._x_cuda = float32_input(x, "ReLU")  # x > 0 decides (A2)
        return cuda_kernels().relu_forward(x)  # (A1)

    def _backward_cuda(self, grad_output):
        x = self._saved(self._x_cuda)
        return cuda_kernels().relu_backward(self._check_grad_cuda(grad_output, x), x)  # (A2)


class LeakyReLU(_Elementwise):
    """y = x if x > 0 else slope * x  (A3);  dy/dx = 1 or slope  (A4)."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = real_number(negative_slope, "LeakyReLU", "negative_slope")
        self._mask = None  # where x > 0, for (A4)

    def forward(self, x):
        if self._uses_cuda(x):  # a device array: the same equation as a CUDA kernel (kernels/cuda_elementwise.py)
            return self._forward_cuda(x)
        x = float_array(x, "LeakyReLU")
        self._mask = x > 0
        return np.where(self._mask, x, x * x.dtype.type(self.negative_slope))  # (A3)

    def backward(self, grad_output):
        if self._backward_uses_cuda(grad_output):
            return self._backward_cuda(grad_output)
        mask = self._saved(self._mask)
        g = self._check_grad(grad_output, mask)
        return np.where(mask, g, g * g.dtype.type(self.negative_slope))  # (A4)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def _forward_cuda(self, x):
        self._x_cuda = float32_input(x, "LeakyReLU")  # x > 0 decides (A4)
        return cuda_kernels().leaky_relu_forward(x, self.negative_slope)  # (A3)

    def _backward_cuda(self, grad_output):
        x = self._saved(self._x_cuda)
        g = self._check_grad_cuda(grad_output, x)
        return cuda_kernels().leaky_relu_backward(g, x, self.negative_slope)  # (A4)


class Sigmoid(_Elementwise):
    """s = 1 / (1 + e^-x)  (A5);  ds/dx = s (1 - s)  (A6): backward needs only the output."""

    def __init__(self):
        super().__init__()
        self._s = None  # the output s, for (A6)

    def forward(self, x):
        if self._uses_cuda(x):  # a device array: the same equation as a CUDA kernel (kernels/cuda_elementwise.py)
            return self._forward_cuda(x)
        x = float_array(x, "Sigmoid")
        # Evaluate e^-|x| only, so no exponent overflows: for x < 0, s = e^x / (1 + e^x).
        e = np.exp(-np.abs(x))
        one = x.dtype.type(1)
        self._s = np.where(x >= 0, one / (one + e), e / (one + e))  # (A5)
        return self._s

    def backward(self, grad_output):
        if self._backward_uses_cuda(grad_output):
            return self._backward_cuda(grad_output)
        s = self._saved(self._s, "its output")
        g = self._check_grad(grad_output, s)
        return g * s * (s.dtype.type(1) - s)  # (A6)

    def _forward_cuda(self, x):
        self._s_cuda = cuda_kernels().sigmoid_forward(float32_input(x, "Sigmoid"))  # (A5), kept for (A6)
        return self._s_cuda

    def _backward_cuda(self, grad_output):
        s = self._saved(self._s_cuda, "its output")
        return cuda_kernels().sigmoid_backward(self._check_grad_cuda(grad_output, s), s)  # (A6)


class Tanh(_Elementwise):
    """t = tanh(x)  (A7);  dt/dx = 1 - t^2  (A8)."""

    def __init__(self):
        super().__init__()
        self._t = None  # the output t, for (A8)

    def forward(self, x):
        if self._uses_cuda(x):  # a device array: the same equation as a CUDA kernel (kernels/cuda_elementwise.py)
            return self._forward_cuda(x)
        x = float_array(x, "Tanh")
        self._t = np.tanh(x)  # (A7)
        return self._t

    def backward(self, grad_output):
        if self._backward_uses_cuda(grad_output):
            return self._backward_cuda(grad_output)
        t = self._saved(self._t, "its output")
        g = self._check_grad(grad_output, t)
        return g * (t.dtype.type(1) - t * t)  # (A8)

    def _forward_cuda(self, x):
        self._t_cuda = cuda_kernels().tanh_forward(float32_input(x, "Tanh"))  # (A7), kept for (A8)
        return self._t_cuda

    def _backward_cuda(self, grad_output):
        t = self._saved(self._t_cuda, "its output")
        return cuda_kernels().tanh_backward(self._check_grad_cuda(grad_output, t), t)  # (A8)


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
        if self.dim is None:  # torch's legacy rule for an unspecified dim
            return 0 if x.ndim in (0, 1, 3) else 1
        if not -x.ndim <= self.dim < max(x.ndim, 1):
            raise ValueError(f"Softmax(dim={self.dim}): dim out of range for input of shape {tuple(x.shape)}")
        return self.dim

    def forward(self, x):
        if self._uses_cuda(x):
            raise unsupported("Softmax", "there is no softmax kernel of its own; train on logits with "
                                         "CrossEntropyLoss, which applies the softmax in its fused kernel")
        x = float_array(x, "Softmax")
        axis = self._axis(x)
        self._axis_used = axis
        z = np.exp(x - x.max(axis=axis, keepdims=True))  # subtracting the max changes nothing in (A9)
        self._p = z / z.sum(axis=axis, keepdims=True)  # (A9)
        return self._p

    def backward(self, grad_output):
        p = self._saved(self._p, "its output")
        g = self._check_grad(grad_output, p)
        return p * (g - (g * p).sum(axis=self._axis_used, keepdims=True))  # (A11)

    def extra_repr(self):
        return f"dim={self.dim}"
