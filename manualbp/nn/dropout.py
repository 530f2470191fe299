"""Dropout and Dropout2d: in training, zero each element (or each whole channel) with probability p and scale
what is kept by 1 / (1 - p); in eval mode, pass the input through.

Derivation: derivations/15-layernorm-dropout.md

The keep/drop decisions come from a counter-based hash of (key, position) (LD8), with one key drawn per
forward from manualbp's generator: ``manualbp.manual_seed(s)`` makes a run's masks reproducible, and the CPU
and the GPU draw the same mask for the same key, whatever the kernels' launch shape.
"""
import numbers
import warnings

import numpy as np

from .. import kernels
from .._checks import float_array
from ..random import get_generator
from .module import Module


class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"{type(self).__name__}: expected p to be a number, got {type(p).__name__}")
        if not 0 <= p <= 1:  # (a NaN too)
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace
        self._mask = None  # uint8 per decision, 1 where kept: backward's mask, eq. (LD7)
        self._inner = 1  # elements per decision
        self._shape = None
        self._dtype = None

    def _elements_per_decision(self, x):
        return 1

    def forward(self, input):
        who = type(self).__name__
        x = float_array(input, who, allow_empty=True)
        self._shape, self._dtype = tuple(x.shape), x.dtype
        if not self.training:  # identity: nothing drawn, nothing scaled
            self._mask = None
            return x
        inner = self._elements_per_decision(x)
        key = int(get_generator().integers(0, 2 ** 63, dtype=np.int64))  # one key per forward (LD8)
        y, self._mask = kernels.dropout_forward(x, float(self.p), key, inner, bool(self.inplace))  # (LD6)
        self._inner = inner
        return y

    def backward(self, grad_output):
        who = type(self).__name__
        if self._shape is None:
            self._saved(None, "the mask")
        g = float_array(grad_output, f"{who}.backward", "grad_output", dtype=self._dtype, like=self._mask,
                        allow_empty=True)
        if tuple(g.shape) != self._shape:
            raise ValueError(f"{who}.backward: expected grad_output of shape {self._shape}, got {tuple(g.shape)}")
        if self._mask is None:  # the forward ran in eval mode (under enable_grad): the identity's gradient
            return g
        return kernels.dropout_backward(g, self._mask, float(self.p), self._inner)  # mask * g / (1 - p), (LD7)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    r"""y = x * m / (1 - p) in training, m_i = 1 with probability 1 - p (else 0), each element on its own (LD6);
    y = x in eval mode.

    Args (torch's): p: the probability of zeroing an element (default 0.5), in [0, 1] (p = 1 gives zeros);
    inplace: write the result into the input's memory.

    Shape: any. Backward: dL/dx = m * dL/dy / (1 - p), the same mask   (LD7).
    """


class Dropout2d(_DropoutNd):
    r"""Dropout of whole channels: the element x[n, c, h, w] is kept or zeroed with its channel (n, c), and kept
    channels are scaled by 1 / (1 - p) (LD6); identity in eval mode.

    Args (torch's): p (default 0.5), inplace.  Shape: (N, C, H, W); as torch, a 3-D input is read as (N, C, L)
    (with torch's warning) and any other input of 2 or more dimensions as (N, C, *) with torch's deprecation
    warning.  Backward: the same channel mask, dL/dx = m * dL/dy / (1 - p)   (LD7).
    """

    def _elements_per_decision(self, x):
        if x.ndim < 2:
            raise ValueError(f"Dropout2d: Feature dropout requires at least 2 dimensions in the input, got shape "
                             f"{tuple(x.shape)}")
        if x.ndim not in (3, 4):
            warnings.warn(f"dropout2d: Received a {x.ndim}-D input to dropout2d, which is deprecated and will result "
                          f"in an error in a future release. To retain the behavior and silence this warning, please "
                          f"use dropout instead. Note that dropout2d exists to provide channel-wise dropout on inputs "
                          f"with 2 spatial dimensions, a channel dimension, and an optional batch dimension (i.e. 3D "
                          f"or 4D inputs).", stacklevel=4)
        if x.ndim == 3:
            warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                          "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel dim. "
                          "This behavior will change in a future release to interpret the input as one without a "
                          "batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, "
                          "please switch to using dropout1d instead.", stacklevel=4)
        return int(np.prod(x.shape[2:], dtype=np.int64))
