"""Linear, plus the two shape-only layers Flatten and Identity.

Derivation: derivations/03-linear.md

Shapes: x (N, in_features), W (out_features, in_features), b (out_features,),
y (N, out_features).  Inputs with extra leading dimensions (N, ..., in_features)
are flattened to rows and restored, as torch allows.
"""
import numpy as np

from .. import kernels
from .._checks import float_array, float_dtype, positive_int
from . import init
from .module import Module
from .parameter import Parameter


class Linear(Module):
    r"""y = x W^T + b.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn an additive bias (default True).
        device, dtype: where the parameters live and their dtype (float32 by default, or float64), as torch.

    Shape:
        input (N, *, in_features) -> output (N, *, out_features).

    Backward (derivations/03-linear.md):
        dL/dx = dL/dy W          (L2)
        dL/dW = (dL/dy)^T x      (L3)
        dL/db = sum_n dL/dy[n]   (L4)

    ``backward(grad_output, input_grad=False)`` computes (L3) and (L4) only and returns None: the first
    layer of a network does not need (L2), since nothing updates its input (``Sequential.backward``).
    """

    _skips_input_grad = True  # backward understands input_grad=False

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = positive_int(in_features, "Linear", "in_features")
        self.out_features = positive_int(out_features, "Linear", "out_features")
        dt = float_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dt))
        self.bias = Parameter(np.empty(self.out_features, dtype=dt)) if bias else None
        init.default_init_(self.weight, self.bias)
        if device is not None:
            self.to(device)
        self._x = None  # the input rows (N, in_features): dL/dW needs them, eq. (L3)

    def forward(self, input):
        x = float_array(input, "Linear", min_ndim=1, dtype=self.weight.dtype, like=self.weight.data,
                        allow_empty=True)  # an empty batch gives an empty output, as torch
        if tuple(x.shape)[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): expected input with last dimension "
                f"{self.in_features}, got shape {tuple(x.shape)}")
        self._lead = tuple(x.shape[:-1])
        rows = x.reshape(x.size // self.in_features, self.in_features)  # (N, in_features), a view
        self._x = rows
        bias = self.bias.data if self.bias is not None else None
        y = kernels.linear_forward(rows, self.weight.data, bias)  # x W^T + b, eq. (L1)
        return y.reshape(self._lead + (self.out_features,))

    def backward(self, grad_output, input_grad=True):
        x = self._saved(self._x)
        g = float_array(grad_output, "Linear.backward", "grad_output", dtype=self.weight.dtype, like=x,
                        allow_empty=True)
        if tuple(g.shape) != self._lead + (self.out_features,):
            raise ValueError(
                f"Linear.backward: expected grad_output of shape {self._lead + (self.out_features,)}, "
                f"got {tuple(g.shape)}")
        g = g.reshape(x.shape[0], self.out_features)
        self.weight.accumulate_grad(kernels.matmul(g, x, transpose_a=True,
                                                   out=self.weight.grad_buffer()))  # (dL/dy)^T x, eq. (L3)
        if self.bias is not None:
            self.bias.accumulate_grad(kernels.bias_grad(g, out=self.bias.grad_buffer()))  # sum over rows, eq. (L4)
        if not input_grad:  # nobody needs dL/dx (the first layer of a training step)
            return None
        grad_x = kernels.matmul(g, self.weight.data)  # dL/dy W, eq. (L2)
        return grad_x.reshape(self._lead + (self.in_features,))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Merge dimensions start_dim..end_dim into one; backward reshapes the gradient back.

    Derivation: derivations/03-linear.md (a reshape moves numbers, so its Jacobian is a permutation:
    the gradient is reshaped the same way in reverse, eq. (L5)).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Flatten: expected {name} to be an int, got {type(v).__name__}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._shape = None  # the input shape, to undo the reshape in backward, eq. (L5)

    def forward(self, input):
        x = float_array(input, "Flatten", allow_empty=True)
        nd = max(x.ndim, 1)
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < nd and 0 <= e < nd) or s > e:
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): dimensions out of range "
                f"for input of shape {tuple(x.shape)}")
        shape = tuple(x.shape)
        self._shape = shape
        self._out_shape = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
        return x.reshape(self._out_shape)  # a view of the same memory, on either device

    def backward(self, grad_output):
        shape = self._saved(self._shape, "the input shape")
        g = float_array(grad_output, "Flatten.backward", "grad_output", allow_empty=True)
        if tuple(g.shape) != self._out_shape:
            raise ValueError(f"Flatten.backward: expected grad_output of shape {self._out_shape} (forward's "
                             f"output), got {tuple(g.shape)}")
        return g.reshape(shape)  # eq. (L5)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """y = x; dL/dx = dL/dy."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input

    def backward(self, grad_output):
        return grad_output
