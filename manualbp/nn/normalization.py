"""LayerNorm: each sample normalised by the mean and variance of its own last dimensions.

Derivation: derivations/15-layernorm-dropout.md

Shapes: x (*, D1, ..., Dk) with (D1, ..., Dk) = normalized_shape; computed on the (R, D) view, R rows of
D = D1*...*Dk values, each row with its own statistics.  weight and bias have normalized_shape.
"""
import numbers

import numpy as np

from .. import kernels
from .._checks import float_array, float_dtype, non_negative_int, real_number
from .module import Module
from .parameter import Parameter


class LayerNorm(Module):
    r"""y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta, statistics over the trailing normalized_shape
    (LD1)-(LD3).

    Args (torch's, in torch's order):
        normalized_shape: an int or a tuple of ints, the trailing shape normalised together.
        eps: added to the (biased) variance (default 1e-5).
        elementwise_affine: learn gamma (``weight``, ones) and, with ``bias``, beta (``bias``, zeros) of
            normalized_shape (default True).
        bias: learn beta (default True).
        device, dtype: where the parameters live and their dtype (float32 by default), as torch.

    Unlike BatchNorm the statistics belong to each sample, so training and eval mode compute the same thing
    and there are no running statistics.  Backward (derivations/15-layernorm-dropout.md):
        dL/dx = (invstd / D) (D g_hat - sum g_hat - x_hat sum(g_hat x_hat)) along each row, g_hat = gamma g (LD4),
        dL/dgamma = sum over rows of g x_hat, dL/dbeta = sum over rows of g   (LD5).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        try:
            shape = tuple(non_negative_int(d, "LayerNorm", "normalized_shape") for d in normalized_shape)
        except TypeError:
            raise TypeError(f"LayerNorm: expected normalized_shape to be an int or a tuple of ints, got "
                            f"{normalized_shape!r}") from None
        if not shape:
            raise ValueError("LayerNorm: expected a non-empty normalized_shape")
        self.normalized_shape = shape
        self.eps = real_number(eps, "LayerNorm", "eps", low=0)
        self.elementwise_affine = bool(elementwise_affine)
        dt = float_dtype(dtype, "LayerNorm")
        self.weight = Parameter(np.ones(shape, dtype=dt)) if self.elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype=dt)) if self.elementwise_affine and bias else None
        self._dtype = dt
        if device is not None:
            self.to(device)
        self._x = None  # the (R, D) rows: x_hat in (LD4), (LD5)
        self._mean = self._invstd = None  # each row's statistics, (LD1), (LD2)
        self._shape = None

    def forward(self, input):
        x = float_array(input, "LayerNorm", dtype=self.weight.dtype if self.weight is not None else None,
                        like=self.weight.data if self.weight is not None else None, allow_empty=True)
        k = len(self.normalized_shape)
        shape = tuple(x.shape)
        if shape[len(shape) - k:] != self.normalized_shape or len(shape) < k:
            raise ValueError(f"Given normalized_shape={list(self.normalized_shape)}, expected input with shape "
                             f"[*, {', '.join(str(d) for d in self.normalized_shape)}], but got input of size"
                             f"{list(shape)}")
        D = int(np.prod(self.normalized_shape, dtype=np.int64))
        rows = x.reshape((x.size // D if D else 0, D))  # (R, D), a view
        w = self.weight.data.reshape(D) if self.weight is not None else None
        b = self.bias.data.reshape(D) if self.bias is not None else None
        y, self._mean, self._invstd = kernels.layer_norm_forward(rows, w, b, self.eps)  # (LD1)-(LD3)
        self._x, self._shape = rows, shape
        return y.reshape(shape)

    def backward(self, grad_output):
        x = self._saved(self._x, "the input")
        g = float_array(grad_output, "LayerNorm.backward", "grad_output", dtype=x.dtype, like=x, allow_empty=True)
        if tuple(g.shape) != self._shape:
            raise ValueError(f"LayerNorm.backward: expected grad_output of shape {self._shape}, got {tuple(g.shape)}")
        w = self.weight.data.reshape(x.shape[1]) if self.weight is not None else None
        bufs = Parameter.grad_buffers(self.weight, self.bias)  # on the GPU with a flat optimizer: where the gradients go (kernels/flat.py)
        out = (None, None) if bufs[0] is None else (bufs[0].reshape(x.shape[1]), bufs[1].reshape(x.shape[1]))
        gx, dgamma, dbeta = kernels.layer_norm_backward(g.reshape(tuple(x.shape)), x, w, self._mean,
                                                        self._invstd, out=out)  # (LD4), (LD5)
        if self.weight is not None:  # (the buffer itself, written through its flat view, when there is one)
            self.weight.accumulate_grad(dgamma.reshape(self.normalized_shape) if bufs[0] is None else bufs[0])
        if self.bias is not None:
            self.bias.accumulate_grad(dbeta.reshape(self.normalized_shape) if bufs[1] is None else bufs[1])
        return gx.reshape(self._shape)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")
