"""Parameter: an array the optimizer updates, and the gradient that backward fills.

Derivation: derivations/01-chain-rule.md (a parameter used more than once gets the sum of the gradients, (C3)).
"""
import numpy as np

from .. import kernels
from .._checks import FLOAT_DTYPES
from ..device import device_of, move, normalize


class Parameter:
    """A trainable array, like ``torch.nn.Parameter``.

    ``data`` holds the values; ``grad`` is ``None`` until the first backward
    pass writes dL/d(data) into it.  Backward passes *add* into ``grad``
    (gradients of a sum are sums of gradients), so a training loop clears it
    with ``zero_grad()`` before each step, exactly as in PyTorch.
    """

    def __init__(self, data, requires_grad=True):
        data = np.array(data, copy=True)
        if data.dtype not in FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.data = np.ascontiguousarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        """``"cuda"`` when ``data`` is a numba.cuda device array (``Module.to("cuda")``), else ``"cpu"``."""
        return device_of(self.data)

    def to(self, device):
        """Move ``data`` and ``grad`` to ``"cuda"`` or ``"cpu"`` in place; returns self (see Module.to)."""
        where = normalize(device)
        self.data, self.grad = move(self.data, where), move(self.grad, where)
        return self

    def accumulate_grad(self, g):
        """Add a freshly computed gradient into ``.grad`` (on the first call, ``g`` itself becomes ``.grad``:
        the kernels return new arrays, never views of anything they reuse)."""
        if not self.requires_grad:
            return
        if tuple(g.shape) != tuple(self.data.shape):
            raise ValueError(f"gradient of shape {tuple(g.shape)} does not match parameter of shape "
                             f"{tuple(self.data.shape)}")
        if self.grad is None:
            self.grad = g
        else:
            kernels.add_(self.grad, g)  # gradients add (C3)

    def __repr__(self):
        return f"Parameter containing:\n{self.data!r}"
